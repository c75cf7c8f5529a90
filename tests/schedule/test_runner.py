"""SlotRunner on a real database: arming, incremental re-sync, and a shutdown that never deadlocks."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import Broadcaster, occurrence_key
from radio.db import make_engine, migrate, session_factory, transaction
from radio.models import Broadcast, BroadcastStatus, Slot
from radio.schedule.loader import load_programme
from radio.schedule.runner import SlotRunner
from radio.settings import Settings

PROGRAMME = """\
zones:
  - id: tdp-1
    name: Tổ dân phố số 1
    nodes:
      - {id: loa-1, name: Cụm loa TDP 1}
bulletins:
  - id: tin
    title: Tin phường
    approved: true
    text: Bản tin của phường.
slots:
  - id: sang
    name: Bản tin sáng
    time: "06:30"
    days: daily
    zones: [tdp-1]
    play: [tin]
"""


@pytest.fixture
def runner(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[SlotRunner]:
    settings = make_settings()
    engine = make_engine(settings.db_url)
    migrate(engine)
    factory = session_factory(engine)
    (tmp_path / "p.yaml").write_text(PROGRAMME, encoding="utf-8")
    load_programme(tmp_path / "p.yaml", factory, settings=settings)
    runner = SlotRunner(settings, factory, Broadcaster(settings, factory, None))  # type: ignore[arg-type]
    runner.scheduler.start(paused=True)  # armed jobs are inspected, never run
    yield runner
    runner.stop()
    engine.dispose()


def armed(runner: SlotRunner, slot_id: str = "sang") -> dt.datetime | None:
    job = runner.scheduler.get_job(f"slot:{slot_id}")
    return None if job is None else job.args[1]


def local(runner: SlotRunner, at: dt.datetime) -> dt.datetime:
    return at.astimezone(runner.settings.tz)


def claim(factory: sessionmaker[Session], slot_id: str, at: dt.datetime) -> None:
    with transaction(factory) as session:
        session.add(Broadcast(occurrence_key=occurrence_key(slot_id, at), slot_id=slot_id, kind="scheduled",
                              title="x", priority="thông thường", scheduled_at=at, status=BroadcastStatus.COMPLETED))


def test_sync_arms_the_next_unclaimed_occurrence_and_follows_changes(runner: SlotRunner) -> None:
    """Each sync arms the next occurrence not yet claimed; a changed or disabled slot is re-armed or dropped."""
    runner.sync()
    first = armed(runner)
    assert first is not None and (local(runner, first).hour, local(runner, first).minute) == (6, 30)
    assert first > dt.datetime.now(dt.UTC)

    claim(runner.factory, "sang", first)  # e.g. aired by another instance
    runner.sync()
    assert armed(runner) == first + dt.timedelta(days=1)

    with transaction(runner.factory) as session:
        session.get_one(Slot, "sang").start_time = dt.time(7, 15)
    runner.sync()
    moved = armed(runner)
    assert moved is not None and (local(runner, moved).hour, local(runner, moved).minute) == (7, 15)

    with transaction(runner.factory) as session:
        session.get_one(Slot, "sang").enabled = False
    runner.sync()
    assert armed(runner) is None


def test_stop_while_a_job_uses_the_scheduler_does_not_deadlock(runner: SlotRunner) -> None:
    """A sync or re-arm running when the service stops finishes, and stop() returns (it once hung forever)."""
    runner.scheduler.resume()
    inside, release = threading.Event(), threading.Event()

    def busy_job() -> None:  # like sync/_fire: works a while, then calls into the scheduler
        inside.set()
        release.wait(10)
        runner.scheduler.get_jobs()

    # An interval job (run now, then hourly): APScheduler's loop only updates it after submitting, whereas
    # removing a finished one-off job races with the shutdown in APScheduler itself.
    runner.scheduler.add_job(busy_job, "interval", hours=1, next_run_time=dt.datetime.now(dt.UTC), id="busy")
    assert inside.wait(10)
    stopper = threading.Thread(target=runner.stop)
    stopper.start()
    stopper.join(0.5)  # stop() is now waiting for the job
    release.set()
    stopper.join(15)
    assert not stopper.is_alive(), "SlotRunner.stop() deadlocked with a running job"
    runner.stop = lambda: None  # type: ignore[method-assign]  # already stopped
