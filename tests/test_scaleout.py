"""Scale-out: two `radio serve` processes on one PostgreSQL and one broker; the leader is killed mid-programme.

Exactly-once rests on the unique occurrence key (``broadcasts.occurrence_key`` = ``slot:<id>@<instant>``):
both instances arm every slot and both try to claim each occurrence; the database lets exactly one insert
win. There is no leader lease: an instance that dies loses nothing the other would not also fire, so the
survivor airs every later occurrence on time, with no take-over delay.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from radio.models import Broadcast, BroadcastStatus
from radio.service import Service
from radio.settings import REPO_ROOT, load_settings
from tests.conftest import Mosquitto, free_port, role_headers, wait_for

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
SLOTS = 4
SPACING_S = 6


@dataclass
class Instance:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(encoding="utf-8", errors="replace")

    def up_or_gone(self) -> bool:
        return self.healthy() or self.proc.poll() is not None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def _env(pg_url: str, broker: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RADIO_DATABASE_URL": pg_url, "RADIO_MQTT_URL": broker, "RADIO_DATA_DIR": str(data_dir),
            "RADIO_QUIET_HOURS": "00:00-00:00", "RADIO_SCHEDULE_SYNC_S": "0.5", "RADIO_COMMAND_LEAD_S": "1",
            "RADIO_ADMIN_PASSWORD": "mat-khau-quan-tri", "PYTHONUNBUFFERED": "1", **extra}


def programme(path: Path, first: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """``SLOTS`` one-off slots ``SPACING_S`` apart, each on its own zone (so no two ever conflict)."""
    zones, bulletins, slots, planned = [], [], [], []
    for i in range(1, SLOTS + 1):
        at = first + dt.timedelta(seconds=(i - 1) * SPACING_S)
        local = at.astimezone(TZ)
        zones.append(f"  - id: so-{i}\n    name: Tổ {i}\n    nodes:\n      - {{id: loa-so-{i}, name: Loa {i}}}\n")
        bulletins.append(f"  - id: luot-{i}\n    title: Lượt {i}\n    approved: true\n"
                         f"    text: Bản tin lượt {i} của phường.\n")
        slots.append(f"  - id: luot-{i}\n    name: Lượt phát {i}\n    time: \"{local:%H:%M:%S}\"\n"
                     f"    dates: [{local:%Y-%m-%d}]\n    priority: ưu tiên\n    zones: [so-{i}]\n"
                     f"    play: [luot-{i}]\n")
        planned.append((f"luot-{i}", at))
    path.write_text("zones:\n" + "".join(zones) + "bulletins:\n" + "".join(bulletins) + "slots:\n" + "".join(slots),
                    encoding="utf-8")
    return planned


@contextlib.contextmanager
def running(pg_url: str, mosquitto: Mosquitto, tmp_path: Path, roles: dict[str, str]) -> Iterator[list[Instance]]:
    """Service processes named by ``roles`` (name → RADIO_ROLE) sharing the database, broker and audio directory."""
    shared = tmp_path / "shared-data"
    started: list[Instance] = []
    try:
        for name, role in roles.items():
            port = free_port()
            log = tmp_path / f"{name}.log"
            env = _env(pg_url, mosquitto.url, shared, RADIO_HTTP_PORT=str(port), RADIO_INSTANCE_ID=name,
                       RADIO_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", RADIO_ROLE=role)
            with log.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "radio.cli", "serve"], env=env, cwd=REPO_ROOT,
                                        stdout=out, stderr=subprocess.STDOUT)
            started.append(Instance(name, port, log, proc))
            if len(started) == 1:  # the first start migrates the empty database; the others find it ready
                wait_for(started[0].up_or_gone, 90, f"instance {name}")
        for inst in started:
            wait_for(inst.up_or_gone, 90, f"instance {inst.name}")
            assert inst.proc.poll() is None, inst.log.read_text(encoding="utf-8", errors="replace")
        yield started
    finally:
        for inst in started:
            if inst.proc.poll() is None:
                inst.proc.terminate()
        for inst in started:
            try:
                inst.proc.wait(30)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait(10)


@pytest.fixture
def instances(pg_url: str, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[list[Instance]]:
    with running(pg_url, mosquitto, tmp_path, {"a": "all", "b": "all"}) as started:
        yield started


def load(path: Path, pg_url: str, mosquitto: Mosquitto, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "radio.cli", "schedule", "load", str(path)],
                          env=_env(pg_url, mosquitto.url, tmp_path / "cli-data"), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def auditor(pg_url: str, tmp_path: Path) -> dict[str, str]:
    tokens = Service(load_settings(database_url=pg_url, data_dir=tmp_path / "tokens"))
    headers = role_headers(tokens)["auditor"]
    tokens.engine.dispose()
    return headers


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.mosquitto
def test_two_instances_air_each_occurrence_once_and_survive_the_leader_being_killed(
    instances: list[Instance], pg_url: str, mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    """Both instances serve the API; SIGKILL of the one that fired first loses no occurrence and doubles none."""
    first = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)).replace(microsecond=0)
    planned = programme(tmp_path / "luot.yaml", first)
    load(tmp_path / "luot.yaml", pg_url, mosquitto, tmp_path)
    headers = auditor(pg_url, tmp_path)
    engine = create_engine(pg_url)

    def aired(slot_id: str) -> list[Broadcast]:
        with Session(engine) as session:
            return list(session.scalars(select(Broadcast).where(Broadcast.slot_id == slot_id)))

    try:
        # The first occurrence: one instance claims it; find which from its own log.
        wait_for(lambda: any(b.status == BroadcastStatus.ON_AIR or b.completed_at for b in aired("luot-1")),
                 30, "the first occurrence to be sent")
        firers = [i for i in instances if i.logged("Phát «Lượt phát 1»")]
        assert len(firers) == 1, [i.log.read_text(encoding="utf-8", errors="replace")[-2000:] for i in instances]
        leader = firers[0]
        survivor = next(i for i in instances if i is not leader)
        assert planned[1][1] > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1), "too slow to kill before slot 2"

        # The API is served by both, from the same database.
        for inst in instances:
            r = httpx.get(f"{inst.base}/api/v1/broadcasts", headers=headers, timeout=10)
            assert r.status_code == 200, r.text
            assert [b["title"] for b in r.json()] == ["Lượt phát 1"]

        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)

        for slot_id, _ in planned:
            wait_for(functools.partial(aired, slot_id), 30, f"{slot_id} to be aired")
        time.sleep(3)  # room for a wrong second airing
        for slot_id, at in planned:
            rows = aired(slot_id)
            assert len(rows) == 1, f"{slot_id} aired {len(rows)} times"
            assert rows[0].scheduled_at == at and rows[0].occurrence_key == f"slot:{slot_id}@{at:%Y-%m-%dT%H:%M:%SZ}"
            assert rows[0].fired_at is not None and (rows[0].fired_at - at).total_seconds() < 3
        for slot_id, _ in planned[1:]:  # everything after the kill came from the survivor
            assert survivor.logged(f"Phát «Lượt phát {slot_id.split('-')[1]}»")

        r = httpx.get(f"{survivor.base}/api/v1/broadcasts", headers=headers, timeout=10)
        assert r.status_code == 200
        assert sorted(b["title"] for b in r.json()) == [f"Lượt phát {i}" for i in range(1, SLOTS + 1)]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{leader.base}/healthz", timeout=2)
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.mosquitto
def test_api_only_instances_serve_but_never_fire(pg_url: str, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """RADIO_ROLE=api serves the API and airs what it is asked to, but every scheduled fire comes from `all`."""
    with running(pg_url, mosquitto, tmp_path, {"sched": "all", "web": "api"}) as (sched, web):
        first = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)).replace(microsecond=0)
        planned = programme(tmp_path / "luot.yaml", first)
        load(tmp_path / "luot.yaml", pg_url, mosquitto, tmp_path)
        headers = auditor(pg_url, tmp_path)
        engine = create_engine(pg_url)
        try:
            def aired() -> list[Broadcast]:
                with Session(engine) as session:
                    return list(session.scalars(select(Broadcast).where(Broadcast.slot_id.is_not(None))))

            sent = [f"Phát «Lượt phát {i}»" for i in range(1, SLOTS + 1)]
            wait_for(lambda: all(sched.logged(line) for line in sent), 90, "every slot to be sent")
            assert sorted(b.slot_id for b in aired()) == sorted(slot_id for slot_id, _ in planned)
            assert not any(web.logged(line) for line in sent)
            r = httpx.get(f"{web.base}/api/v1/broadcasts", headers=headers, timeout=10)
            assert r.status_code == 200 and len(r.json()) == SLOTS
            # Audio prepared by the scheduling instance is served by the API instance (one shared store).
            sha = aired()[0].audio_sha256
            assert httpx.get(f"{web.base}/audio/{sha}.mp3", timeout=10).status_code == 200
        finally:
            engine.dispose()
