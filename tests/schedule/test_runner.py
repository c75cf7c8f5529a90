"""SlotRunner on a real database: arming, incremental re-sync, and a shutdown that never deadlocks."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import Broadcaster, occurrence_key
from radio.db import make_engine, migrate, session_factory, transaction
from radio.models import Alert, Broadcast, BroadcastStatus, Slot
from radio.schedule.loader import load_programme
from radio.schedule.runner import SlotRunner
from radio.settings import Settings
from tests.conftest import wait_for

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
    runner = _make_runner(tmp_path, make_settings, PROGRAMME)  # armed jobs are inspected, never run
    yield runner
    runner.stop()
    runner.factory.kw["bind"].dispose()


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


def _make_runner(tmp_path: Path, make_settings: Callable[..., Settings], programme: str,
                 **overrides: object) -> SlotRunner:
    settings = make_settings(**overrides)
    engine = make_engine(settings.db_url)
    migrate(engine)
    factory = session_factory(engine)
    (tmp_path / "p.yaml").write_text(programme, encoding="utf-8")
    load_programme(tmp_path / "p.yaml", factory, settings=settings)
    runner = SlotRunner(settings, factory, Broadcaster(settings, factory, None))  # type: ignore[arg-type]
    runner.scheduler.start(paused=True)
    return runner


def test_stored_dates_at_the_end_of_the_calendar_never_crash_sync(runner: SlotRunner) -> None:
    """Rows naming year 9999 or year 1 (written before the loader bounded dates) are armed or skipped, never an
    OverflowError that stops `radio serve` (it once died in recurrence._horizon)."""
    with transaction(runner.factory) as session:
        sang = session.get_one(Slot, "sang")
        sang.exclude_dates = ["9999-12-31"]
        for ident, values in {"xa": {"dates": ["9999-12-31"], "weekdays": ""},
                              "tu-nam-9999": {"valid_from": dt.date(9999, 12, 30), "weekdays": ""},
                              "tu-nam-1": {"valid_from": dt.date(1, 1, 1), "valid_until": dt.date(1, 1, 31)}}.items():
            session.add(Slot(id=ident, name=ident, start_time=dt.time(23, 30), weekdays=values.get("weekdays", "mon"),
                             interval_weeks=1, dates=values.get("dates", []), exclude_dates=[],
                             valid_from=values.get("valid_from"), valid_until=values.get("valid_until"),
                             holidays="keep", priority="normal", enabled=True))
    runner.sync()
    first = armed(runner)
    assert first is not None and first > dt.datetime.now(dt.UTC)
    assert armed(runner, "xa") is not None and armed(runner, "xa").year == 9999  # type: ignore[union-attr]
    assert armed(runner, "tu-nam-1") is None


def test_a_fire_delayed_past_the_grace_period_is_recorded_as_missed(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    """A job that runs later than misfire_grace_s while the service runs (a stalled process) is not dropped
    silently by APScheduler: the broadcaster records the occurrence as missed, with an alert."""
    runner = _make_runner(tmp_path, make_settings, PROGRAMME, misfire_grace_s=1)
    try:
        at = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).replace(microsecond=0)
        runner._arm("sang", at)  # as if the timing thread had stalled for 5 s past the occurrence
        runner.scheduler.resume()

        def recorded() -> Broadcast | None:
            with runner.factory() as session:
                return session.scalars(select(Broadcast).where(
                    Broadcast.occurrence_key == occurrence_key("sang", at))).one_or_none()

        wait_for(lambda: recorded() is not None, 10, "the late occurrence to be recorded")
        row = recorded()
        assert row is not None and row.status == BroadcastStatus.MISSED and "quá hạn" in (row.reason or "")
        with runner.factory() as session:
            assert session.scalars(select(Alert).where(Alert.broadcast_id == row.id)).one().kind == "missed"
    finally:
        runner.stop()
        runner.factory.kw["bind"].dispose()


SAME_INSTANT = PROGRAMME + """\
  - id: uu-tien
    name: Thông báo ưu tiên
    time: "06:30"
    days: daily
    priority: ưu tiên
    zones: [tdp-1]
    play: [tin]
"""


def test_a_priority_occurrence_is_issued_before_a_normal_one_due_at_the_same_instant(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    """A priority and a normal occurrence due at the same instant on the same loudspeakers: the priority one is
    issued first and the normal one starts after it ends (it is not started first and then cut off), even when
    the priority one takes longer to prepare."""
    runner = _make_runner(tmp_path, make_settings, SAME_INSTANT)
    real_fire = runner.broadcaster.fire_slot

    def slow_priority(slot_id: str, at: dt.datetime) -> int | None:
        if slot_id == "uu-tien":
            time.sleep(1.0)  # e.g. its speech is not cached yet: the normal fire would win the race
        return real_fire(slot_id, at)

    runner.broadcaster.fire_slot = slow_priority  # type: ignore[method-assign]
    try:
        runner.sync()
        at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).replace(microsecond=0) + dt.timedelta(seconds=1)
        runner._arm("sang", at)
        runner._arm("uu-tien", at)
        runner.scheduler.resume()

        def issued() -> dict[str, Broadcast]:
            with runner.factory() as session:
                rows = session.scalars(select(Broadcast).where(Broadcast.scheduled_at == at)).all()
                return {row.slot_id: row for row in rows if row.start_at is not None and row.slot_id}

        wait_for(lambda: len(issued()) == 2, 30, "both occurrences to be issued")
        rows = issued()
        priority, normal = rows["uu-tien"], rows["sang"]
        assert priority.status == normal.status == BroadcastStatus.ON_AIR
        assert priority.fired_at is not None and normal.fired_at is not None and priority.fired_at <= normal.fired_at
        priority_end = priority.start_at + dt.timedelta(seconds=priority.duration_s or 0)  # type: ignore[operator]
        assert normal.start_at >= priority_end, (normal.start_at, priority_end)  # type: ignore[operator]
    finally:
        runner.stop()
        runner.factory.kw["bind"].dispose()


def test_waiting_normal_fires_never_hold_the_threads_a_priority_fire_needs(
    tmp_path: Path, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More normal occurrences than fire threads, due with a priority one at the same instant and dispatched
    before it (APScheduler hands them out by job id): the priority one still goes first, at once."""
    import radio.schedule.runner as runner_module

    monkeypatch.setattr(runner_module, "FIRE_THREADS", 4)
    normals = [f"a{i}" for i in range(8)]
    programme = SAME_INSTANT.replace("- id: uu-tien", "- id: zz-uu-tien") + "".join(f"""\
  - id: {slot_id}
    name: Bản tin {slot_id}
    time: "07:{i:02d}"
    days: daily
    zones: [tdp-1]
    play: [tin]
""" for i, slot_id in enumerate(normals))  # apart in the file (no clash); armed at one instant below
    runner = _make_runner(tmp_path, make_settings, programme, quiet_hours="00:00-00:00", sessions_per_day=20)
    fired: list[str] = []
    runner.broadcaster.fire_slot = lambda slot_id, at: fired.append(slot_id)  # type: ignore[method-assign,assignment,return-value]
    try:
        runner.sync()
        at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).replace(microsecond=0) + dt.timedelta(seconds=1)
        for slot_id in [*normals, "zz-uu-tien"]:
            runner._arm(slot_id, at)
        runner.scheduler.resume()
        wait_for(lambda: len(fired) == len(normals) + 1, 20, "every occurrence to fire")
        assert fired[0] == "zz-uu-tien", fired
    finally:
        runner.stop()
        runner.factory.kw["bind"].dispose()


def test_a_normal_fire_waits_for_a_priority_occurrence_another_instance_is_preparing(
    tmp_path: Path, make_settings: Callable[..., Settings],
) -> None:
    """Two instances share the database: the other one claimed the priority occurrence and is still preparing
    its audio. This instance's normal fire of the same instant waits until it is issued, then goes."""
    runner = _make_runner(tmp_path, make_settings, SAME_INSTANT)
    fired: dict[str, float] = {}
    runner.broadcaster.fire_slot = lambda slot_id, at: fired.setdefault(slot_id, time.monotonic())  # type: ignore[method-assign,assignment,return-value]
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).replace(microsecond=0) + dt.timedelta(seconds=1)
    with transaction(runner.factory) as session:  # the other instance's claim, audio not ready yet
        session.add(Broadcast(occurrence_key=occurrence_key("uu-tien", at), slot_id="uu-tien", kind="scheduled",
                              title="Thông báo ưu tiên", priority="priority", scheduled_at=at,
                              status=BroadcastStatus.PREPARING))
    try:
        runner.sync()
        runner._arm("sang", at)
        runner._arm("uu-tien", at)
        runner.scheduler.resume()
        wait_for(lambda: "uu-tien" in fired, 10, "this instance's (refused) priority fire")
        # A sync now sees the other instance's claim and arms the priority slot's next occurrence instead:
        runner._arm("uu-tien", at + dt.timedelta(days=1))
        time.sleep(1.0)
        assert "sang" not in fired  # still preparing elsewhere: the normal one waits
        with transaction(runner.factory) as session:
            row = session.scalars(select(Broadcast).where(Broadcast.slot_id == "uu-tien")).one()
            row.status = BroadcastStatus.ON_AIR
        issued = time.monotonic()
        wait_for(lambda: "sang" in fired, 10, "the normal occurrence to fire once the priority one is issued")
        assert fired["sang"] >= issued
    finally:
        runner.stop()
        runner.factory.kw["bind"].dispose()
