"""The walking skeleton end to end: programme file → TTS → MQTT → simulated nodes → as-run log.

Runs on every combination of database (SQLite, PostgreSQL) and broker (embedded amqtt, Mosquitto).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select, update

from radio.db import migrate, transaction
from radio.dispatch import topics
from radio.dispatch.messages import Command as CommandMsg
from radio.dispatch.messages import parse
from radio.dispatch.mqtt import BrokerAddress
from radio.errors import ServiceUnavailable
from radio.logbook.report import as_run_table
from radio.models import Broadcast, BroadcastStatus, Delivery, DeliveryState, Node, Slot, utcnow
from radio.schedule.loader import load_programme, parse_programme
from radio.service import Service
from radio.settings import Settings
from radio.sound.ffmpeg import probe_duration
from radio.sound.store import AudioStore
from tests.conftest import DEMO, Running, free_port, wait_for

SHORT_SLOT = "nhac-lich-mot-cua"  # a short approved bulletin on two TDPs, so the test runs in seconds
UNAPPROVED_SLOT = "thong-bao-doi-thoai"


def _online(service: Service) -> int:
    with service.factory() as session:
        return int(session.scalar(select(func.count()).select_from(Node).where(Node.online.is_(True))) or 0)


def _start_demo(make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
                **overrides: object) -> Service:
    """Start the service with the demo programme and its simulated nodes, all online.

    The demo's own slots are moved to 2099 first: a test must never depend on the hour it runs at (a real
    18:00 relay slot firing mid-test would hold every node for 15 minutes). Tests fire them by hand.
    """
    service = Service(make_settings(**overrides), simulate=True)
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    demo_slots = [slot.id for slot in parse_programme(DEMO).slots]
    with transaction(service.factory) as session:  # only the demo's own: a test's slots stay as loaded
        session.execute(update(Slot).where(Slot.id.in_(demo_slots)).values(valid_from=dt.date(2099, 1, 1)))
    start_service(service)
    with service.factory() as session:
        total = int(session.scalar(select(func.count()).select_from(Node)) or 0)
    wait_for(lambda: _online(service) == total, 30, f"all {total} simulated nodes online")
    return service


def _wait_settled(service: Service, broadcast_id: int, timeout: float = 90) -> Broadcast:
    def settled() -> bool:
        with service.factory() as session:
            return session.get_one(Broadcast, broadcast_id).status not in (BroadcastStatus.PREPARING,
                                                                           BroadcastStatus.ON_AIR)

    wait_for(settled, timeout, f"broadcast {broadcast_id} to settle")
    with service.factory() as session:
        row = session.get_one(Broadcast, broadcast_id)
        _ = row.deliveries
        return row


@pytest.mark.slow
def test_slot_fired_now_plays_on_every_targeted_node(
    db_url: str, mqtt_url: str | None, make_settings: Callable[..., Settings],
    start_service: Callable[[Service], Running],
) -> None:
    """A demo slot fired now is synthesised, pushed and finished by every node of its zones, with real durations."""
    service = _start_demo(make_settings, start_service, database_url=db_url, mqtt_url=mqtt_url)
    assert service.broadcaster is not None
    with service.factory() as session:
        slot = session.get_one(Slot, SHORT_SLOT)
        targeted = set(session.scalars(select(Node.id).where(Node.zone_id.in_(slot.zone_ids))))
        everyone = set(session.scalars(select(Node.id)))
    assert targeted and targeted != everyone  # the slot targets some zones only

    at = utcnow().replace(microsecond=0)
    broadcast_id = service.broadcaster.fire_slot(SHORT_SLOT, at)
    assert broadcast_id is not None
    broadcast = _wait_settled(service, broadcast_id)

    assert broadcast.status == BroadcastStatus.COMPLETED, broadcast.reason
    assert {d.node_id for d in broadcast.deliveries} == targeted
    assert broadcast.audio_sha256 is not None and broadcast.duration_s is not None
    measured = probe_duration(AudioStore(service.settings.audio_dir).path_for(broadcast.audio_sha256))
    assert broadcast.duration_s == pytest.approx(measured, abs=0.05)
    for d in broadcast.deliveries:
        assert d.state == DeliveryState.FINISHED
        assert d.received_at and d.ready_at and d.started_at and d.finished_at
        assert d.received_at <= d.ready_at <= d.started_at <= d.finished_at
        assert d.played_s == pytest.approx(measured, abs=0.3)
        assert d.started_at >= broadcast.start_at - dt.timedelta(milliseconds=50)

    # The same occurrence can never air twice.
    assert service.broadcaster.fire_slot(SHORT_SLOT, at) is None
    with service.factory() as session:
        assert session.scalar(select(func.count()).select_from(Broadcast)
                              .where(Broadcast.slot_id == SHORT_SLOT)) == 1
        table = as_run_table(session, service.settings.tz)
        text = session.get_one(Slot, SHORT_SLOT).items[0].bulletin.text
    assert "phát xong" in table and "Giờ phát" in table
    assert sum(f"{d.played_s:.1f}" in table for d in broadcast.deliveries) == len(broadcast.deliveries)

    # `radio tts say` makes exactly the file that aired: what the officer hears is what the loudspeakers play.
    said = service.settings.data_dir / "said.mp3"
    env = {**os.environ, "RADIO_DATA_DIR": str(service.settings.data_dir), "RADIO_DATABASE_URL": db_url}
    subprocess.run([sys.executable, "-m", "radio.cli", "tts", "say", text, "-o", str(said)], env=env, check=True,
                   capture_output=True, timeout=120)
    assert hashlib.sha256(said.read_bytes()).hexdigest() == broadcast.audio_sha256


@pytest.mark.slow
def test_unapproved_content_is_recorded_and_never_sent(
    make_settings: Callable[..., Settings], start_service: Callable[[Service], Running]
) -> None:
    """A slot whose bulletin is not approved is recorded as not aired and no node gets a command."""
    service = _start_demo(make_settings, start_service)
    assert service.broadcaster is not None
    broadcast_id = service.broadcaster.fire_slot(UNAPPROVED_SLOT, utcnow())
    assert broadcast_id is not None
    with service.factory() as session:
        row = session.get_one(Broadcast, broadcast_id)
        assert row.status == BroadcastStatus.NOT_AIRED
        assert "chưa được phê duyệt" in (row.reason or "")
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


@pytest.mark.slow
@pytest.mark.mosquitto
def test_commands_on_the_wire_match_the_protocol(
    mosquitto: object, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running]
) -> None:
    """A plain subscriber on '#' sees QoS 1, non-retained commands in the documented v1 form."""
    url = mosquitto.url  # type: ignore[attr-defined]
    service = _start_demo(make_settings, start_service, mqtt_url=url)
    seen: list[paho.MQTTMessage] = []
    subscribed = threading.Event()
    spy = paho.Client(CallbackAPIVersion.VERSION2, client_id="spy")
    spy.on_connect = lambda c, *_: c.subscribe("#", qos=1)
    spy.on_subscribe = lambda *_: subscribed.set()
    spy.on_message = lambda _c, _u, m: seen.append(m)
    address = BrokerAddress.parse(url)
    spy.connect(address.host, address.port)
    spy.loop_start()
    try:
        assert subscribed.wait(10)
        assert service.broadcaster is not None
        broadcast_id = service.broadcaster.fire_slot(SHORT_SLOT, utcnow())
        assert broadcast_id is not None
        _wait_settled(service, broadcast_id)
    finally:
        spy.loop_stop()
        spy.disconnect()
    site = service.settings.site_id
    commands = [m for m in seen if "/cmd/" in m.topic]
    assert commands, "no command seen on the broker"
    for m in commands:
        assert m.qos == 1 and not m.retain
        assert m.topic.startswith(topics.root(site) + "/cmd/zone/")
        body = json.loads(m.payload)
        assert {"v", "id", "type", "broadcast_id", "priority", "issued_at", "start_at", "valid_until",
                "audio"} <= body.keys()
        assert set(body["audio"]) == {"url", "sha256", "duration_s", "format"}
        cmd = parse(CommandMsg, m.payload)
        assert cmd.broadcast_id == broadcast_id and cmd.v == 1
    events = [json.loads(m.payload)["event"] for m in seen if "/evt/" in m.topic]
    assert {"received", "ready", "started", "finished"} <= set(events)
    states = [m for m in seen if "/state/" in m.topic]
    assert states and all(json.loads(m.payload)["online"] in (True, False) for m in states)


@pytest.mark.slow
def test_bad_node_messages_are_dropped_and_the_service_keeps_working(
    make_settings: Callable[..., Settings], start_service: Callable[[Service], Running]
) -> None:
    """Garbage, forged and unknown-command events are dropped with a log line; the service keeps recording."""
    service = _start_demo(make_settings, start_service)
    assert service.mqtt is not None
    site = service.settings.site_id
    before = service.recorder.dropped
    bad = [
        (topics.event(site, "loa-tdp1-a"), b"not json"),
        (topics.event(site, "loa-tdp1-a"), b"[" * 100000),
        (topics.event(site, "loa-tdp1-a"), json.dumps({"v": 1, "node": "loa-tdp1-a", "command_id": "nope",
                                                       "event": "finished", "at": "2026-01-01T00:00:00Z"}).encode()),
        (topics.event(site, "loa-tdp1-a"), json.dumps({"v": 1, "node": "loa-tdp2-a", "command_id": "x",
                                                       "event": "finished", "at": "2026-01-01T00:00:00Z"}).encode()),
        (topics.state(site, "loa-tdp1-a"), json.dumps({"v": 1, "node": "loa-tdp1-a", "online": "yes",
                                                       "session": -1}).encode()),
    ]
    for topic, payload in bad:
        service.mqtt.publish(topic, payload).wait_for_publish(5)
    wait_for(lambda: service.recorder.dropped - before >= len(bad), 10, "the bad messages to be dropped")
    assert service.broadcaster is not None
    broadcast_id = service.broadcaster.fire_slot(SHORT_SLOT, utcnow())
    assert broadcast_id is not None
    assert _wait_settled(service, broadcast_id).status == BroadcastStatus.COMPLETED


def test_unreachable_broker_is_a_clear_error(make_settings: Callable[..., Settings]) -> None:
    """A broker that is down at start gives a message naming its address, not a traceback."""
    port = free_port()
    service = Service(make_settings(mqtt_url=f"mqtt://127.0.0.1:{port}", mqtt_connect_timeout_s=2))
    with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port}"):
        service.start()


@pytest.mark.slow
def test_scheduler_fires_a_slot_added_by_the_cli_while_running(
    tmp_path: Path, make_settings: Callable[..., Settings],
    start_service: Callable[[Service], Running],
) -> None:
    """A slot loaded from the CLI into the running service's database fires on time through APScheduler."""
    service = _start_demo(make_settings, start_service, schedule_sync_s=0.5)
    tz = service.settings.tz
    at = (utcnow() + dt.timedelta(seconds=4)).replace(microsecond=0)
    local = at.astimezone(tz)
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "zones:\n  - id: tdp-1\n    name: Tổ dân phố số 1\n    nodes:\n"
        "      - {id: loa-tdp1-a, name: Cụm loa Nhà văn hóa TDP 1}\n"
        "bulletins:\n  - id: thu-nghiem\n    title: Thử nghiệm\n    approved: true\n"
        "    text: Đây là bản tin thử nghiệm của đài truyền thanh phường.\n"
        f"slots:\n  - id: thu-nghiem\n    name: Thử nghiệm\n    time: \"{local:%H:%M:%S}\"\n"
        f"    dates: [{local:%Y-%m-%d}]\n    priority: ưu tiên\n    zones: [tdp-1]\n    play: [thu-nghiem]\n",
        encoding="utf-8",
    )
    # What `radio schedule load` does, on the same database:
    load_programme(extra, service.factory, settings=service.settings)

    def fired() -> bool:
        with service.factory() as session:
            return session.scalar(select(Broadcast.id).where(Broadcast.slot_id == "thu-nghiem")) is not None

    wait_for(fired, 30, "the scheduler to fire the new slot")
    with service.factory() as session:
        row = session.scalars(select(Broadcast).where(Broadcast.slot_id == "thu-nghiem")).one()
        assert row.scheduled_at == at
        assert row.fired_at is not None and (row.fired_at - at).total_seconds() < 2
        broadcast_id = row.id
    assert _wait_settled(service, broadcast_id).status == BroadcastStatus.COMPLETED
