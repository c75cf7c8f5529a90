"""The service and a simulated fleet on a real Mosquitto, with faults: restarts, offline nodes, clocks, corruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from radio.db import make_engine, migrate, session_factory
from radio.models import DeliveryState, Node
from radio.node.simulator import FaultConfig, Fleet
from radio.service import Service
from radio.settings import Settings
from tests.conftest import Mosquitto, Running, wait_for
from tests.node.conftest import FleetThread, add_nodes, air_short, deliveries, fleet_configs, settled

pytestmark = pytest.mark.mosquitto
LONG_TEXT = "Kính thưa bà con. Đây là bản tin thử hệ thống loa. Xin cảm ơn bà con đã lắng nghe."


def _start(make_settings: Callable[..., Settings], start_service: Callable[[Service], Running], broker: Mosquitto,
           nodes: int, **overrides: object) -> Service:
    service = Service(make_settings(mqtt_url=broker.url, **overrides))
    start_service(service)
    add_nodes(service.factory, nodes)
    assert service.outbox is not None
    service.outbox.resend_s, service.outbox.end_grace_s = 1.0, 1.0  # tests do not wait for production timers
    return service


def _online(service: Service) -> int:
    with service.factory() as session:
        return sum(1 for n in session.query(Node).all() if n.online)


def _start_fleet(service: Service, broker: Mosquitto, tmp_path: Path, **kw: object) -> FleetThread:
    fleet = Fleet(fleet_configs(service.factory, broker.url, tmp_path, service.settings.site_id), **kw)  # type: ignore[arg-type]
    runner = FleetThread(fleet)
    runner.call(fleet.wait_connected(60))
    runner.call(fleet.wait_synced(30))
    return runner


def test_broker_restart_mid_broadcast_ends_final_and_never_twice(
        mosquitto: Mosquitto, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
        tmp_path: Path) -> None:
    """Mosquitto restarted while nodes play: every delivery ends final (finished), no node plays twice."""
    service = _start(make_settings, start_service, mosquitto, 20)
    fleet = _start_fleet(service, mosquitto, tmp_path)
    try:
        broadcast_id = air_short(service, LONG_TEXT)
        wait_for(lambda: all(d.state == DeliveryState.PLAYING for d in deliveries(service.factory, broadcast_id)),
                 20, "every node playing")
        mosquitto.stop()
        time.sleep(2)
        mosquitto.start()
        wait_for(lambda: settled(service.factory, broadcast_id), 90, "the broadcast to settle")
        rows = deliveries(service.factory, broadcast_id)
        assert len(rows) == 20 and {d.state for d in rows} == {DeliveryState.FINISHED}, [(d.node_id, d.state, d.reason)
                                                                                         for d in rows]
        assert all(len(p.starts) == 1 for p in fleet.fleet.players.values())
    finally:
        fleet.stop()


def test_offline_node_plays_if_back_in_time_else_missed_offline(
        mosquitto: Mosquitto, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
        tmp_path: Path) -> None:
    """Offline at fire time: back within validity → plays late; back after → `missed: offline` and never plays."""
    service = _start(make_settings, start_service, mosquitto, 3, command_validity_s=12, broadcast_timeout_s=60)
    fleet = _start_fleet(service, mosquitto, tmp_path)
    try:
        soon, late = "sim-0001", "sim-0002"
        fleet.call(fleet.fleet.take_offline(soon, 4.0, wait=False))
        fleet.call(fleet.fleet.take_offline(late, 18.0, wait=False))
        wait_for(lambda: _online(service) == 1, 10, "two nodes seen offline")
        broadcast_id = air_short(service)
        wait_for(lambda: settled(service.factory, broadcast_id), 40, "the broadcast to settle")
        by_node = {d.node_id: d for d in deliveries(service.factory, broadcast_id)}
        assert by_node["sim-0000"].state == DeliveryState.FINISHED
        assert by_node[soon].state == DeliveryState.FINISHED
        late_start, on_time = by_node[soon].started_at, by_node["sim-0000"].started_at
        assert late_start is not None and on_time is not None
        assert late_start > on_time  # it played late, when it came back
        assert by_node[late].state == DeliveryState.MISSED and by_node[late].reason == "missed: offline"
        agent = fleet.fleet.agent(late)
        wait_for(lambda: agent.connected.is_set() and agent.journal.records, 30, "the late node back with the command")
        wait_for(lambda: all(r.final for r in agent.journal.records.values()), 10, "its answer")
        (record,) = agent.journal.records.values()
        assert record.last is not None and record.last.event.value == "expired"
        assert fleet.fleet.players[late].starts == []
        assert deliveries(service.factory, broadcast_id)[2].state == DeliveryState.MISSED  # the answer moves nothing
    finally:
        fleet.stop()


def test_clock_offsets_of_five_seconds_on_fifty_nodes_start_together(
        mosquitto: Mosquitto, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
        tmp_path: Path) -> None:
    """50 nodes with clocks up to ±5 s off start within 50 ms of each other, measured on the true clock."""
    service = _start(make_settings, start_service, mosquitto, 50, command_lead_s=3.0)
    fleet = _start_fleet(service, mosquitto, tmp_path, faults=FaultConfig(clock_skew_s=5.0, seed=7), speed=4.0)
    try:
        skews = [c.clock_skew_s for c in fleet.fleet.configs]
        assert max(skews) > 3 and min(skews) < -3
        broadcast_id = air_short(service)
        wait_for(lambda: settled(service.factory, broadcast_id), 60, "the broadcast to settle")
        rows = deliveries(service.factory, broadcast_id)
        assert {d.state for d in rows} == {DeliveryState.FINISHED}
        true_starts = [p.starts[0][1] for p in fleet.fleet.players.values()]
        reported = [d.started_at.timestamp() for d in rows if d.started_at]
        assert max(true_starts) - min(true_starts) <= 0.050
        assert max(reported) - min(reported) <= 0.050
    finally:
        fleet.stop()


def test_faults_dropped_duplicated_slow_and_corrupt_end_final(
        mosquitto: Mosquitto, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
        tmp_path: Path) -> None:
    """Lost and repeated messages, slow and corrupt downloads: all final, corrupt-twice nodes failed, none plays twice."""
    service = _start(make_settings, start_service, mosquitto, 24, command_lead_s=2.0)
    faults = FaultConfig(drop=0.1, duplicate=0.3, slow=0.2, slow_s=1.0, corrupt=0.25, corrupt_always=0.125, seed=3)
    fleet = _start_fleet(service, mosquitto, tmp_path, faults=faults, speed=4.0)
    try:
        broadcast_id = air_short(service)
        wait_for(lambda: settled(service.factory, broadcast_id), 60, "the broadcast to settle")
        rows = {d.node_id: d for d in deliveries(service.factory, broadcast_id)}
        broken = fleet.fleet.corrupt_always_ids
        assert broken and len(rows) == 24
        for node_id, d in rows.items():
            if node_id in broken:
                assert d.state == DeliveryState.FAILED and "sha256" in (d.reason or ""), (node_id, d.reason)
            else:
                assert d.state == DeliveryState.FINISHED, (node_id, d.state, d.reason)
        assert all(len(p.starts) <= 1 for p in fleet.fleet.players.values())
        assert sum(len(p.starts) for p in fleet.fleet.players.values()) == 24 - len(broken)
    finally:
        fleet.stop()


def test_crash_mid_playback_is_reported_and_never_replayed(
        mosquitto: Mosquitto, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
        tmp_path: Path) -> None:
    """Nodes that crash while playing come back, report `failed: interrupted` and do not play the bulletin again."""
    service = _start(make_settings, start_service, mosquitto, 8)
    fleet = _start_fleet(service, mosquitto, tmp_path, faults=FaultConfig(crash=0.25, crash_restart_s=1.0, seed=5))
    try:
        broadcast_id = air_short(service, LONG_TEXT)
        wait_for(lambda: settled(service.factory, broadcast_id), 60, "the broadcast to settle")
        rows = {d.node_id: d for d in deliveries(service.factory, broadcast_id)}
        crashed = fleet.fleet.crash_ids
        assert len(crashed) == 2 and set(fleet.fleet.crashes) == crashed
        for node_id, d in rows.items():
            if node_id in crashed:
                assert d.state == DeliveryState.FAILED and "interrupted" in (d.reason or "")
            else:
                assert d.state == DeliveryState.FINISHED
        assert all(len(p.starts) == 1 for p in fleet.fleet.players.values())
    finally:
        fleet.stop()


def _simulate(service: Service, broker: Mosquitto, tmp_path: Path, *flags: str) -> subprocess.Popen[bytes]:
    """`radio simulate` in its own process (its own core), reading the nodes from the service's database."""
    env = {**os.environ, "RADIO_DATABASE_URL": service.settings.db_url, "RADIO_DATA_DIR": str(tmp_path / "fleet"),
           "RADIO_SITE_ID": service.settings.site_id}
    return subprocess.Popen([sys.executable, "-m", "radio.cli", "simulate", "--broker", broker.url, "--summary", "0",
                             *flags], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_thousand_nodes_answer_one_broadcast_and_every_event_is_counted(
        mosquitto: Mosquitto, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
        tmp_path: Path) -> None:
    """1,000 simulated nodes answer one broadcast at once; the service receives all 4,000 events (queue limits set)."""
    count = 1000
    # The lead covers 1,000 audio downloads from this one Python service (~5-10 s here, see bench/fanout.py).
    service = _start(make_settings, start_service, mosquitto, count, command_lead_s=10.0, broadcast_timeout_s=300)
    proc = _simulate(service, mosquitto, tmp_path, "--speed", "8")
    try:
        wait_for(lambda: _online(service) == count, 90, f"{count} nodes online", interval=0.5)
        time.sleep(3)  # their first clock syncs
        before = dict(service.recorder.events)
        broadcast_id = air_short(service)
        wait_for(lambda: settled(service.factory, broadcast_id), 300, "the broadcast to settle", interval=0.5)
        rows = deliveries(service.factory, broadcast_id)
        assert len(rows) == count and {d.state for d in rows} == {DeliveryState.FINISHED}, \
            {(d.state, d.reason) for d in rows}
        assert all(d.received_at and d.ready_at and d.started_at and d.finished_at for d in rows)
        counted = {k: v - before.get(k, 0) for k, v in service.recorder.events.items()}
        for step in ("received", "ready", "started", "finished"):
            assert counted.get(step, 0) >= count, counted
        assert service.recorder.dropped == 0
    finally:
        _stop(proc)


@pytest.mark.slow
def test_service_killed_after_publishing_loses_nothing_and_duplicates_nothing(
        mosquitto: Mosquitto, make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """SIGKILL right after an emergency is published, then restart: every node plays it once and is recorded once."""
    settings = make_settings(mqtt_url=mosquitto.url, command_lead_s=2.0, broadcast_timeout_s=60)
    engine = make_engine(settings.db_url)
    migrate(engine)
    factory = session_factory(engine)
    add_nodes(factory, 10)
    env = {**os.environ, "RADIO_DATA_DIR": str(settings.data_dir), "RADIO_HTTP_PORT": str(settings.http_port),
           "RADIO_MQTT_URL": mosquitto.url, "RADIO_PUBLIC_BASE_URL": str(settings.public_base_url),
           "RADIO_COMMAND_LEAD_S": "2", "RADIO_BROADCAST_TIMEOUT_S": "60", "RADIO_INSTANCE_ID": "sigkill-test"}
    api = f"{settings.public_base_url}/api/v1"

    def serve() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "radio.cli", "serve"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return httpx.get(f"{settings.public_base_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the service to answer")
        return proc

    service = serve()
    fleet = FleetThread(Fleet(fleet_configs(factory, mosquitto.url, tmp_path, settings.site_id)))
    try:
        fleet.call(fleet.fleet.wait_connected(30))
        fleet.call(fleet.fleet.wait_synced(30))
        with httpx.Client(timeout=60) as officer:  # the first start wrote the admin's password next to the data
            password = (settings.data_dir / "admin-password.txt").read_text().strip()
            me = officer.post(f"{api}/login", json={"username": "admin", "password": password})
            assert me.status_code == 200, me.text
            answer = officer.post(f"{api}/emergency", json={"text": "Thông báo khẩn: thử hệ thống loa."},
                                  headers={"X-CSRF-Token": me.json()["csrf_token"]})
        assert answer.status_code == 201, answer.text
        service.kill()  # SIGKILL: no goodbye, no flush, nothing in memory survives
        service.wait(10)
        broadcast_id = answer.json()["broadcast_id"]
        time.sleep(3)  # nodes carry on alone: downloads fail and are retried, events wait in the broker
        service = serve()
        wait_for(lambda: settled(factory, broadcast_id), 90, "the broadcast to settle")
        rows = deliveries(factory, broadcast_id)
        assert len(rows) == 10 and {d.state for d in rows} == {DeliveryState.FINISHED}, [
            (d.node_id, d.state, d.reason) for d in rows]
        assert all(len(p.starts) == 1 for p in fleet.fleet.players.values())
    finally:
        fleet.stop()
        _stop(service)
        engine.dispose()
