"""Faults on real processes (loopback only): speech engine down, audio disk full, database away."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydub import AudioSegment
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.models import FINAL_DELIVERY_STATES, Alert, Broadcast, BroadcastStatus, Delivery, DeliveryState, utcnow
from radio.service import Service
from radio.settings import Settings
from radio.speech import engines
from tests.conftest import Mosquitto, Running, free_port, unavailable, wait_for
from tests.test_end_to_end import SHORT_SLOT, _start_demo, _wait_settled


class BrokenEngine:
    name = "espeak"

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        raise engines.SpeechError("espeak-ng crashed (simulated at the engine boundary)")


@pytest.fixture
def broken_speech() -> Iterator[Callable[[bool], None]]:
    """Switch the offline engine between broken and working (the only fake: the engine boundary)."""
    original = engines._FACTORIES["espeak"]

    def set_broken(broken: bool) -> None:
        engines.register_engine("espeak", (lambda _s: BrokenEngine()) if broken else original)

    yield set_broken
    engines.register_engine("espeak", original)


@pytest.mark.slow
def test_tts_failure_is_recorded_and_the_scheduler_keeps_running(
    broken_speech: Callable[[bool], None], make_settings: Callable[..., Settings],
    start_service: Callable[[Service], Running],
) -> None:
    """With speech broken a slot is recorded as failed with the reason and an alert; the next one airs."""
    service = _start_demo(make_settings, start_service)
    assert service.broadcaster is not None
    broken_speech(True)
    failed = service.broadcaster.fire_slot(SHORT_SLOT, utcnow().replace(microsecond=0))
    assert failed is not None
    with service.factory() as session:
        row = session.get_one(Broadcast, failed)
        assert row.status == BroadcastStatus.FAILED and "không tạo được âm thanh" in (row.reason or "")
        assert "espeak-ng crashed" in (row.reason or "")
        assert session.scalars(select(Alert).where(Alert.broadcast_id == failed)).one().kind == "failed"
    broken_speech(False)
    assert service.runner is not None and service.runner.scheduler.running
    later = service.broadcaster.fire_slot("doan-thanh-nien-t3-t5", utcnow().replace(microsecond=0))
    assert later is not None
    row = _wait_settled(service, later)
    assert row.status == BroadcastStatus.COMPLETED, [(d.node_id, d.state, d.reason) for d in row.deliveries]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the audio store, so 'disk full' is real."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        unavailable("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_full_audio_disk_is_recorded_as_failed(
    small_disk: Path, tmp_path: Path, make_settings: Callable[..., Settings],
    start_service: Callable[[Service], Running],
) -> None:
    """When the audio store's disk is full the slot fails with the OS reason and an alert; nothing half-written."""
    service = _start_demo(make_settings, start_service, data_dir=small_disk,
                          database_url=f"sqlite:///{tmp_path / 'radio.db'}")  # only the audio store is on it
    audio = small_disk / "audio"
    with contextlib.suppress(OSError), open(small_disk / "filler", "wb") as f:  # fill the disk
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    assert service.broadcaster is not None
    broadcast_id = service.broadcaster.fire_slot("chieu-ngay-thuong", utcnow().replace(microsecond=0))
    assert broadcast_id is not None
    with service.factory() as session:
        row = session.get_one(Broadcast, broadcast_id)
        assert row.status == BroadcastStatus.FAILED, row.reason
        assert "No space left" in (row.reason or "") or "không tạo được âm thanh" in (row.reason or "")
        assert session.scalars(select(Alert).where(Alert.broadcast_id == broadcast_id)).one().kind == "failed"
    assert not list(audio.rglob("*.part")) and not list(audio.rglob("*.tmp"))


class TcpProxy:
    """A loopback TCP proxy we can cut and restore, standing in for a database that goes away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    def up(self) -> None:
        self._call(self._start())

    def down(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


@pytest.mark.slow
@pytest.mark.postgres
def test_database_outage_reports_unhealthy_and_recovers(
    pg_url: str, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
) -> None:
    """With PostgreSQL cut off the service says unhealthy; when it returns, broadcasts and events are all recorded."""
    with socket.create_connection(("127.0.0.1", 5432), timeout=2):
        pass
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    try:
        url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        service = _start_demo(make_settings, start_service, database_url=url)
        base = service.settings.public_base_url
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert service.broadcaster is not None
        broadcast_id = service.broadcaster.fire_slot(SHORT_SLOT, utcnow().replace(microsecond=0))
        assert broadcast_id is not None
        proxy.down()  # nodes now play and report while the database is away
        wait_for(lambda: httpx.get(f"{base}/healthz", timeout=10).status_code == 503, 20, "unhealthy")
        assert httpx.get(f"{base}/healthz").json()["database"] is False
        wait_for(lambda: service.recorder.queue.qsize() > 0 or service.recorder.pending, 30,
                 "node events to wait for the database")
        proxy.up()
        wait_for(lambda: httpx.get(f"{base}/healthz", timeout=10).status_code == 200, 30, "healthy again")
        row = _wait_settled(service, broadcast_id)
        assert row.status == BroadcastStatus.COMPLETED  # every node's events arrived after the outage
    finally:
        proxy.close()


@pytest.mark.slow
@pytest.mark.mosquitto
def test_broker_down_at_fire_time_and_back_30_s_later_delivers_everything(
    mosquitto: Mosquitto, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
) -> None:
    """A slot fired while the broker is down reaches every targeted node once it is back 30 s later."""
    service = _start_demo(make_settings, start_service, mqtt_url=mosquitto.url)
    assert service.broadcaster is not None
    mosquitto.stop()
    wait_for(lambda: service.mqtt is not None and not service.mqtt.connected, 10, "the service to see the outage")
    broadcast_id = service.broadcaster.fire_slot(SHORT_SLOT, utcnow().replace(microsecond=0))
    assert broadcast_id is not None  # stored in the outbox, even though nothing can be sent now
    time.sleep(30)
    mosquitto.start()
    row = _wait_settled(service, broadcast_id, timeout=120)
    assert row.status == BroadcastStatus.COMPLETED, [(d.node_id, d.state, d.reason) for d in row.deliveries]
    assert all(d.state == "finished" for d in row.deliveries)


@pytest.mark.slow
def test_sigkill_under_load_loses_no_row_and_airs_nothing_twice(
    make_settings: Callable[..., Settings], tmp_path: Path,
) -> None:
    """SIGKILL while officers write and a slot fires and plays: every acknowledged change and its audit row
    survive, the audit chain verifies, the occurrence is recorded exactly once after the restart, the node
    reports recorded before the kill survive, and no node plays the broadcast a second time."""
    import signal
    import sys

    from radio.db import make_engine, migrate, session_factory
    from radio.logbook import audit
    from radio.models import Bulletin
    from radio.schedule.loader import load_programme
    from tests.conftest import DEMO, role_headers
    from tests.test_scheduling_e2e import add_one_off_slot, count

    # Delivery states in the order a node goes through them; the final ones last (a report never goes back).
    RANK = {DeliveryState.ISSUED: 0, DeliveryState.RECEIVED: 1, DeliveryState.READY: 2, DeliveryState.PLAYING: 3,
            **{state: 4 for state in FINAL_DELIVERY_STATES}}

    def deliveries(factory: sessionmaker[Session]) -> list[Delivery]:
        """The deliveries (per node and part) of the one-off slot's broadcast, as committed now."""
        with factory() as session:
            return list(session.scalars(select(Delivery).join(Broadcast).where(Broadcast.slot_id == "mot-lan")
                                        .order_by(Delivery.node_id, Delivery.part)))

    settings = make_settings(schedule_sync_s=0.5)
    engine = make_engine(settings.db_url)
    migrate(engine)
    factory = session_factory(engine)
    load_programme(DEMO, factory, settings=settings)
    probe = Service(settings)
    token = role_headers(probe)["officer"]
    env = {**os.environ, "RADIO_DATA_DIR": str(settings.data_dir), "RADIO_HTTP_PORT": str(settings.http_port),
           "RADIO_EMBEDDED_MQTT_PORT": str(settings.embedded_mqtt_port), "RADIO_SCHEDULE_SYNC_S": "0.5",
           "RADIO_PUBLIC_BASE_URL": str(settings.public_base_url), "RADIO_QUIET_HOURS": "00:00-00:00"}
    base = str(settings.public_base_url)

    def serve() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "radio.cli", "serve", "--simulate"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the service to answer")
        return proc

    proc = serve()
    acknowledged: list[str] = []
    stop = threading.Event()

    def officer(n: int) -> None:
        with httpx.Client(base_url=base, headers=token, timeout=10) as client:
            i = 0
            while not stop.is_set():
                ident = f"tai-{n}-{i}"
                try:
                    r = client.post("/api/v1/bulletins", json={"id": ident, "title": "Tải", "text": "Bản tin thử tải."})
                except httpx.HTTPError:
                    return  # the service died under us: this one was never acknowledged
                if r.status_code == 201:
                    acknowledged.append(ident)
                i += 1

    try:
        at = (utcnow() + dt.timedelta(seconds=3)).replace(microsecond=0)
        fake = Service(settings)  # only its factory and settings are used to load the slot
        add_one_off_slot(tmp_path / "x.yaml", fake, at)
        workers = [threading.Thread(target=officer, args=(n,)) for n in range(4)]
        for w in workers:
            w.start()
        wait_for(lambda: count(factory, "mot-lan") == 1, 20, "the slot to fire under load")
        wait_for(lambda: any(d.state != DeliveryState.ISSUED for d in deliveries(factory)), 20,
                 "a node's report of the broadcast to be recorded")
        before_kill = {(d.node_id, d.part): d for d in deliveries(factory)}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for w in workers:
            w.join(10)
        assert len(acknowledged) > 5
        proc = serve()
        time.sleep(2)  # a wrong second airing would happen now
        assert count(factory, "mot-lan") == 1
        wait_for(lambda: all(DeliveryState(d.state).final for d in deliveries(factory)), 90,
                 "every delivery of the broadcast to settle after the restart")
        after = {(d.node_id, d.part): d for d in deliveries(factory)}
        assert set(after) == set(before_kill), "a delivery was lost or added by the restart"
        for key, old in before_kill.items():
            new = after[key]
            assert (new.id, new.command_id) == (old.id, old.command_id), key  # the same command, not a new one
            assert RANK[new.state] >= RANK[old.state], (key, old.state, new.state)  # reports kept, none undone
            for stamp in ("received_at", "ready_at", "started_at", "finished_at"):
                if getattr(old, stamp) is not None:  # recorded before the kill: survived, not rewritten
                    assert getattr(new, stamp) == getattr(old, stamp), (key, stamp)
            if old.started_at is not None:  # it was playing or had played: no second start after the restart
                assert new.state in (DeliveryState.PLAYING, *FINAL_DELIVERY_STATES), (key, new.state)
        assert any(d.state == DeliveryState.FINISHED for d in after.values()), \
            [(d.node_id, d.state, d.reason) for d in after.values()]
        with factory() as session:
            stored = set(session.scalars(select(Bulletin.id).where(Bulletin.id.like("tai-%"))))
            assert set(acknowledged) <= stored
            _total, rows = audit.entries(session, action=audit.BULLETIN_CREATED, limit=100000)
            assert set(acknowledged) <= {r.entity_id for r in rows}
            assert audit.verify(session).ok
    finally:
        stop.set()
        proc.terminate()
        proc.wait(20)
        engine.dispose()
