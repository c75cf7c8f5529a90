"""Scheduling you can trust, end to end: exactly once across restarts and instances, misses, emergencies, CAP."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import Broadcaster
from radio.db import migrate, transaction
from radio.models import (
    Alert,
    AudioAsset,
    Broadcast,
    BroadcastStatus,
    Command,
    Delivery,
    DeliveryState,
    ServiceMark,
    utcnow,
)
from radio.schedule.loader import load_programme
from radio.schedule.runner import ALIVE
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app
from tests.conftest import DEMO, Mosquitto, Running, role_headers, wait_for
from tests.test_end_to_end import _start_demo, _wait_settled


@pytest.fixture
def other_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process in another time zone: the site's zone alone must decide wall-clock times."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def add_one_off_slot(path: Path, service: Service, at: dt.datetime, slot_id: str = "mot-lan") -> None:
    """Load a one-off slot at ``at`` on TDP 1 (as `radio schedule load` would) into the database."""
    local = at.astimezone(service.settings.tz)
    path.write_text(
        "zones:\n  - id: tdp-1\n    name: Tổ dân phố số 1\n    nodes:\n"
        "      - {id: loa-tdp1-a, name: Cụm loa Nhà văn hóa TDP 1}\n"
        f"bulletins:\n  - id: {slot_id}\n    title: Một lần\n    approved: true\n"
        "    text: Bản tin phát một lần của phường.\n"
        f"slots:\n  - id: {slot_id}\n    name: Một lần\n    time: \"{local:%H:%M:%S}\"\n"
        f"    dates: [{local:%Y-%m-%d}]\n    priority: ưu tiên\n    zones: [tdp-1]\n    play: [{slot_id}]\n",
        encoding="utf-8",
    )
    load_programme(path, service.factory, settings=service.settings)


def count(factory: sessionmaker[Session], slot_id: str) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(Broadcast).where(Broadcast.slot_id == slot_id)) or 0)


@pytest.mark.slow
@pytest.mark.parametrize("stop_when", ["before", "after"])
def test_restart_around_an_occurrence_airs_it_exactly_once(
    stop_when: str, other_tz: None, tmp_path: Path, make_settings: Callable[..., Settings],
    start_service: Callable[[Service], Running],
) -> None:
    """Stopping the service just before or just after an occurrence and starting again airs it exactly once."""
    first = _start_demo(make_settings, start_service, schedule_sync_s=0.5)
    db = first.settings.db_url
    at = (utcnow() + dt.timedelta(seconds=10 if stop_when == "before" else 2)).replace(microsecond=0)
    add_one_off_slot(tmp_path / "x.yaml", first, at)
    if stop_when == "after":
        wait_for(lambda: count(first.factory, "mot-lan") == 1, 20, "the first instance to fire")
    _stop(first)
    assert count(first.factory, "mot-lan") == (1 if stop_when == "after" else 0)
    if stop_when == "before":
        while utcnow() < at + dt.timedelta(seconds=1):  # down at the occurrence, back within the grace period
            time.sleep(0.1)
    second = _start_demo(make_settings, start_service, database_url=db, schedule_sync_s=0.5)
    wait_for(lambda: count(second.factory, "mot-lan") == 1, 20, "the occurrence to be handled")
    time.sleep(2)  # give a wrong second airing the chance to happen
    assert count(second.factory, "mot-lan") == 1
    with second.factory() as session:
        row = session.scalars(select(Broadcast).where(Broadcast.slot_id == "mot-lan")).one()
        assert row.scheduled_at == at
        local = row.scheduled_at.astimezone(second.settings.tz)
        assert local.strftime("%H:%M:%S") == at.astimezone(second.settings.tz).strftime("%H:%M:%S")


def _stop(service: Service) -> None:
    """Stop a service started through uvicorn the way the fixture would, but now."""
    service.stop()
    service.stop = lambda: None  # type: ignore[method-assign]  # the fixture's later stop is a no-op


@pytest.mark.slow
def test_occurrences_missed_while_down_are_recorded_and_never_played(
    tmp_path: Path, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
) -> None:
    """After downtime, an occurrence older than the grace period is recorded as missed with an alert, never aired."""
    settings = make_settings(misfire_grace_s=60)
    service = Service(settings, programme=DEMO, simulate=True)
    migrate(service.engine)
    at = (utcnow() - dt.timedelta(minutes=20)).replace(microsecond=0)
    add_one_off_slot(tmp_path / "x.yaml", service, at)
    with transaction(service.factory) as session:
        session.add(ServiceMark(key=ALIVE, at=utcnow() - dt.timedelta(hours=1)))
    start_service(service)
    with service.factory() as session:
        row = session.scalars(select(Broadcast).where(Broadcast.slot_id == "mot-lan")).one()
        assert row.status == BroadcastStatus.MISSED and row.scheduled_at == at
        assert "dịch vụ không chạy" in (row.reason or "")
        assert session.scalar(select(func.count()).select_from(Delivery).where(Delivery.broadcast_id == row.id)) == 0
        assert session.scalars(select(Alert).where(Alert.broadcast_id == row.id)).one().kind == "missed"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.mosquitto
def test_two_instances_on_one_postgres_dispatch_each_occurrence_once(
    pg_url: str, mosquitto: Mosquitto, tmp_path: Path, make_settings: Callable[..., Settings],
    start_service: Callable[[Service], Running],
) -> None:
    """Two scheduler instances sharing one PostgreSQL database air each occurrence exactly once."""
    a = _start_demo(make_settings, start_service, database_url=pg_url, mqtt_url=mosquitto.url, schedule_sync_s=0.5,
                    instance_id="a")
    b = Service(make_settings(database_url=pg_url, mqtt_url=mosquitto.url, schedule_sync_s=0.5, instance_id="b"))
    start_service(b)
    at = (utcnow() + dt.timedelta(seconds=3)).replace(microsecond=0)
    add_one_off_slot(tmp_path / "x.yaml", a, at)
    wait_for(lambda: count(a.factory, "mot-lan") == 1, 20, "the occurrence to fire")
    time.sleep(2)
    assert count(a.factory, "mot-lan") == 1
    with a.factory() as session:
        row = session.scalars(select(Broadcast).where(Broadcast.slot_id == "mot-lan")).one()
        broadcast_id = row.id
        nodes = [d.node_id for d in session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id))]
        assert sorted(nodes) == ["loa-tdp1-a", "loa-tdp1-b"]  # one delivery per node of TDP 1, not two
    assert _wait_settled(a, broadcast_id).status == BroadcastStatus.COMPLETED


@pytest.mark.slow
def test_emergency_preempts_and_plays_on_every_node(
    make_settings: Callable[..., Settings], start_service: Callable[[Service], Running]
) -> None:
    """An emergency posted to the API airs at once on the whole ward while a normal slot is playing."""
    service = _start_demo(make_settings, start_service)
    assert service.broadcaster is not None
    normal = service.broadcaster.fire_slot("sang-ngay-thuong", utcnow())  # long: minutes of speech
    assert normal is not None

    def playing() -> bool:
        with service.factory() as session:
            return bool(session.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.broadcast_id == normal, Delivery.state == DeliveryState.PLAYING)))

    wait_for(playing, 30, "the normal slot to start playing")
    with TestClient(create_app(service, manage=False)) as client:
        r = client.post("/api/v1/emergency", json={"text": "Bão số 3 đổ bộ trong đêm nay, bà con chằng chống nhà cửa.",
                                                   "title": "Cảnh báo bão số 3"},
                        headers=role_headers(service)["approver"])
    assert r.status_code == 201, r.text
    emergency = _wait_settled(service, r.json()["broadcast_id"])
    assert emergency.status == BroadcastStatus.COMPLETED and emergency.priority == "emergency"
    with service.factory() as session:
        nodes = {d.node_id for d in session.scalars(select(Delivery).where(Delivery.broadcast_id == normal))}
        normal_row = session.get_one(Broadcast, normal)
        normal_end = normal_row.start_at + dt.timedelta(seconds=normal_row.duration_s or 0)
    assert {d.node_id for d in emergency.deliveries} == nodes  # the whole ward
    assert all(d.started_at is not None and d.started_at < normal_end for d in emergency.deliveries)


CAP = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{ident}</identifier><sender>pctt@bacgiang.gov.vn</sender><sent>2026-11-27T10:00:00+07:00</sent>
  <status>{status}</status><msgType>{msg_type}</msgType><scope>Public</scope>{refs}
  <info><language>vi-VN</language><category>Met</category><event>Lũ</event><urgency>Immediate</urgency>
    <severity>Severe</severity><certainty>Observed</certainty><expires>{expires}</expires>
    <headline>Cảnh báo lũ sông Thương</headline>
    <description>Mực nước sông Thương đang lên nhanh, dự báo vượt báo động 2 trong 6 giờ tới.</description>
    <instruction>Bà con TDP 1 và TDP 2 di chuyển tài sản lên cao.</instruction>
    <area><areaDesc>Phường Thọ Xương</areaDesc><geocode><valueName>ward</valueName><value>{geocode}</value></geocode></area>
  </info>
</alert>"""


def cap(ident: str, *, status: str = "Actual", msg_type: str = "Alert", refs: str = "", geocode: str = "TX-SONG",
        minutes: int = 60) -> bytes:
    expires = (utcnow() + dt.timedelta(minutes=minutes)).isoformat()
    references = f"<references>pctt@bacgiang.gov.vn,{refs},2026-11-27T10:00:00+07:00</references>" if refs else ""
    return CAP.format(ident=ident, status=status, msg_type=msg_type, refs=references, expires=expires,
                      geocode=geocode).encode()


@pytest.mark.slow
def test_cap_alert_update_cancel_and_exercise(
    make_settings: Callable[..., Settings], start_service: Callable[[Service], Running]
) -> None:
    """CAP: Alert airs on the mapped zones, Update replaces it, Cancel stops it, Exercise reaches only the test zone."""
    service = _start_demo(make_settings, start_service,
                          cap_zone_map={"TX-SONG": ["tdp-1", "tdp-2"], "TX-ALL": ["all"]}, cap_test_zone="tdp-6")
    headers = {"Content-Type": "application/xml", **role_headers(service)["approver"]}
    with TestClient(create_app(service, manage=False)) as client:
        post = lambda body: client.post("/api/v1/cap", content=body, headers=headers)  # noqa: E731
        first = post(cap("lu-1"))
        assert first.status_code == 200 and first.json()["action"] == "aired", first.text
        b1 = _wait_settled(service, first.json()["broadcast_id"])
        assert {d.node_id for d in b1.deliveries} == {"loa-tdp1-a", "loa-tdp1-b", "loa-tdp2-a"}
        assert "sông thương" in (b1.text or "").lower() and b1.valid_until is not None

        update = post(cap("lu-2", msg_type="Update", refs="lu-1"))
        assert update.json()["action"] == "replaced"
        cancel = post(cap("lu-3", msg_type="Cancel", refs="lu-2"))
        assert cancel.json()["action"] == "cancelled"
        with service.factory() as session:
            assert "CAP hủy" in (session.get_one(Broadcast, update.json()["broadcast_id"]).reason or "")

        drill = post(cap("dien-tap", status="Exercise", geocode="TX-ALL"))
        drill_row = _wait_settled(service, drill.json()["broadcast_id"])
        assert {d.node_id for d in drill_row.deliveries} == {"loa-tdp6-a"}

        assert post(cap("ngoai", geocode="HN-01")).status_code == 422
        assert post(cap("cu", minutes=-5)).json()["action"] == "ignored"
        bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><alert>&x;</alert>'
        assert post(bomb).status_code == 422


@pytest.mark.slow
def test_cli_emergency_goes_through_the_running_service(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
) -> None:
    """`radio emergency … --zone tdp-2` airs on TDP 2's nodes only, through the service's API."""
    from radio.cli import main

    service = _start_demo(make_settings, start_service)
    monkeypatch.setenv("RADIO_PUBLIC_BASE_URL", service.settings.public_base_url or "")
    text = "Cháy tại chợ Thọ Xương, bà con tránh xa khu vực."
    assert main(["emergency", text, "--zone", "tdp-2"]) == 2  # no token: refused with a message
    monkeypatch.setenv("RADIO_API_TOKEN", role_headers(service)["approver"]["Authorization"][7:])
    assert main(["emergency", text, "--zone", "tdp-2"]) == 0
    broadcast_id = int(capsys.readouterr().out.split("số")[1].split()[0])
    row = _wait_settled(service, broadcast_id)
    assert row.kind == "emergency" and {d.node_id for d in row.deliveries} == {"loa-tdp2-a"}
    assert row.status == BroadcastStatus.COMPLETED


class RecordingBroadcaster(Broadcaster):
    """The real broadcaster (claims, audio, deliveries, commands), with publishing recorded instead of sent."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session]) -> None:
        super().__init__(settings, factory, None)  # type: ignore[arg-type]
        self.published: list[Command] = []

    def publish(self, command: Command) -> None:
        self.published.append(command)


@pytest.fixture
def cap_broadcaster(make_settings: Callable[..., Settings]) -> Iterator[RecordingBroadcaster]:
    service = Service(make_settings(cap_zone_map={"TX-SONG": ["tdp-1", "tdp-2"], "TX-ALL": ["all"]},
                                    cap_test_zone="tdp-6"))
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    yield RecordingBroadcaster(service.settings, service.factory)
    service.engine.dispose()


def stops_for(broadcaster: RecordingBroadcaster, broadcast_id: int) -> int:
    return sum(1 for c in broadcaster.published
               if c.broadcast_id == broadcast_id and c.payload.get("type") == "stop")


def test_the_same_cap_alert_posted_twice_airs_once(cap_broadcaster: RecordingBroadcaster) -> None:
    """A CAP alert received twice (a retry, a second feed) returns the first broadcast and airs nothing again."""
    from radio import emergency

    zone_map = cap_broadcaster.settings.cap_zone_map
    alert = emergency.parse_cap(cap("lu-1"))
    first = emergency.handle_cap(cap_broadcaster, alert, zone_map=zone_map, test_zone="tdp-6")
    assert first.action == "aired" and first.broadcast_id is not None
    published = len(cap_broadcaster.published)
    again = emergency.handle_cap(cap_broadcaster, emergency.parse_cap(cap("lu-1")), zone_map=zone_map,
                                 test_zone="tdp-6")
    assert (again.action, again.broadcast_id) == ("duplicate", first.broadcast_id)
    assert len(cap_broadcaster.published) == published  # no new command
    with cap_broadcaster.factory() as session:
        assert session.scalar(select(func.count()).select_from(Broadcast).where(
            Broadcast.external_id == "lu-1")) == 1
    # The same identifier from the same sender but sent at another time is another alert.
    other = emergency.handle_cap(cap_broadcaster, emergency.parse_cap(cap("lu-1").replace(
        b"2026-11-27T10:00:00+07:00</sent>", b"2026-11-27T11:00:00+07:00</sent>")), zone_map=zone_map,
        test_zone="tdp-6")
    assert other.action == "aired" and other.broadcast_id != first.broadcast_id


@pytest.mark.parametrize("status", ["Exercise", "Test"])
def test_an_exercise_or_test_cancel_or_update_leaves_the_actual_alert_on_air(
    cap_broadcaster: RecordingBroadcaster, status: str,
) -> None:
    """A drill's Cancel or Update that references a real alert neither stops nor replaces it; a Cancel of the
    same status (Actual) does stop it, and a drill's Cancel stops the drill."""
    from radio import emergency

    zone_map = cap_broadcaster.settings.cap_zone_map

    def post(body: bytes) -> emergency.CapOutcome:
        return emergency.handle_cap(cap_broadcaster, emergency.parse_cap(body), zone_map=zone_map,
                                    test_zone="tdp-6")

    actual = post(cap("that"))
    assert actual.action == "aired" and actual.broadcast_id is not None
    drill_update = post(cap("drill-update", status=status, msg_type="Update", refs="that"))
    assert drill_update.action == "aired"  # a drill of its own, on the test zone: nothing replaced
    drill_cancel = post(cap("drill-cancel", status=status, msg_type="Cancel", refs="that"))
    assert drill_cancel.action == "cancelled" and drill_cancel.broadcast_id is None
    assert stops_for(cap_broadcaster, actual.broadcast_id) == 0
    with cap_broadcaster.factory() as session:
        row = session.get_one(Broadcast, actual.broadcast_id)
        assert "CAP" not in (row.reason or "") and row.status == BroadcastStatus.ON_AIR

    drill = post(cap("drill", status=status, geocode="TX-ALL"))
    assert drill.broadcast_id is not None
    assert post(cap("drill-stop", status=status, msg_type="Cancel", refs="drill")).broadcast_id == drill.broadcast_id
    assert stops_for(cap_broadcaster, drill.broadcast_id) > 0 and stops_for(cap_broadcaster, actual.broadcast_id) == 0

    real_cancel = post(cap("that-cancel", msg_type="Cancel", refs="that"))
    assert real_cancel.broadcast_id == actual.broadcast_id and stops_for(cap_broadcaster, actual.broadcast_id) > 0


@pytest.mark.slow
def test_a_slot_with_an_uploaded_recording_and_a_relay_plays_its_parts_in_order(
    tmp_path: Path, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
) -> None:
    """A playlist of the uploaded jingle, a live relay (tiếp âm), then a spoken bulletin — as the demo's evening
    relay and market slots combine them — reaches every node of the zone as three parts, played in that order,
    each starting when the previous one ends."""
    service = _start_demo(make_settings, start_service)
    assert service.broadcaster is not None and service.fleet is not None
    relay = "http://127.0.0.1:9/stream/dai-thanh-pho"
    path = tmp_path / "tiep-am.yaml"
    path.write_text(
        "zones:\n  - id: tdp-1\n    name: Tổ dân phố số 1\n    nodes:\n"
        "      - {id: loa-tdp1-a, name: Cụm loa Nhà văn hóa TDP 1}\n      - {id: loa-tdp1-b, name: Cụm loa đầu ngõ TDP 1}\n"
        "bulletins:\n  - id: sau-tiep-am\n    title: Sau tiếp âm\n    approved: true\n"
        "    text: Kết thúc chương trình tiếp âm.\n"
        "slots:\n  - id: nhac-tiep-am\n    name: Nhạc hiệu và tiếp âm\n    time: \"18:00\"\n"
        "    dates: [2099-01-05]\n    zones: [tdp-1]\n"
        f"    play: [{{audio: nhac-hieu}}, {{relay: \"{relay}\", seconds: 2}}, sau-tiep-am]\n",
        encoding="utf-8")
    load_programme(path, service.factory, settings=service.settings)
    broadcast_id = service.broadcaster.fire_slot("nhac-tiep-am", utcnow())
    assert broadcast_id is not None
    row = _wait_settled(service, broadcast_id)
    assert row.status == BroadcastStatus.COMPLETED, row.reason
    with service.factory() as session:
        commands = sorted(session.scalars(select(Command).where(Command.broadcast_id == broadcast_id)),
                          key=lambda c: c.payload["start_at"])
        jingle = session.get_one(AudioAsset, "nhac-hieu")
        deliveries = list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)))
    kinds = [(c.payload["type"], c.topic) for c in commands]
    assert [kind for kind, _ in kinds] == ["play", "relay", "play"], kinds
    assert commands[1].payload["stream"] == {"url": relay, "duration_s": 2.0}
    first_audio, last_audio = commands[0].payload["audio"], commands[2].payload["audio"]
    # The uploaded jingle alone (after the opening chime every recorded part starts with), not the bulletin too.
    assert jingle.duration_s <= first_audio["duration_s"] < jingle.duration_s + 5
    assert first_audio["sha256"] != last_audio["sha256"]
    nodes = {"loa-tdp1-a", "loa-tdp1-b"}
    assert {d.node_id for d in deliveries} == nodes and len(deliveries) == 3 * len(nodes)
    for node in nodes:
        mine = sorted((d for d in deliveries if d.node_id == node), key=lambda d: d.part)
        assert [d.state for d in mine] == [DeliveryState.FINISHED] * 3, [(d.part, d.state, d.reason) for d in mine]
        starts = [d.started_at for d in mine]
        assert all(s is not None for s in starts) and starts == sorted(starts)
        assert mine[1].played_s == pytest.approx(2.0, abs=0.5)
        played = service.fleet.players[node].played[-3:]
        assert first_audio["sha256"] in played[0] and played[1] == relay and last_audio["sha256"] in played[2], played


@pytest.mark.slow
def test_priority_and_normal_due_at_the_same_instant_play_one_after_the_other(
    tmp_path: Path, make_settings: Callable[..., Settings], start_service: Callable[[Service], Running],
) -> None:
    """A priority (ưu tiên) and a normal slot due at the same second on the same zone: the priority one plays
    first and the normal one plays in full after it, on every node — not started first and then cut off — even
    when the priority one is slower to prepare."""
    service = _start_demo(make_settings, start_service, schedule_sync_s=0.5)
    assert service.broadcaster is not None and service.runner is not None
    real_fire = service.broadcaster.fire_slot

    def slow_priority(slot_id: str, at: dt.datetime) -> int | None:
        if slot_id == "uu-tien":
            time.sleep(1.0)  # e.g. its speech is not in the cache yet
        return real_fire(slot_id, at)

    service.broadcaster.fire_slot = slow_priority  # type: ignore[method-assign]
    at = (utcnow() + dt.timedelta(seconds=6)).replace(microsecond=0)
    local = at.astimezone(service.settings.tz)
    path = tmp_path / "cung-gio.yaml"
    path.write_text(
        "zones:\n  - id: tdp-1\n    name: Tổ dân phố số 1\n    nodes:\n"
        "      - {id: loa-tdp1-a, name: Cụm loa Nhà văn hóa TDP 1}\n      - {id: loa-tdp1-b, name: Cụm loa đầu ngõ TDP 1}\n"
        "bulletins:\n"
        "  - {id: thuong, title: Thông thường, approved: true, text: Bản tin thường lệ của phường.}\n"
        "  - {id: gap, title: Ưu tiên, approved: true, text: Thông báo ưu tiên về lịch cắt điện.}\n"
        "slots:\n"
        f"  - {{id: thuong, name: Bản tin thường, time: \"{local:%H:%M:%S}\", dates: [{local:%Y-%m-%d}], "
        "zones: [tdp-1], play: [thuong]}\n"
        f"  - {{id: uu-tien, name: Thông báo ưu tiên, time: \"{local:%H:%M:%S}\", dates: [{local:%Y-%m-%d}], "
        "priority: ưu tiên, zones: [tdp-1], play: [gap]}\n",
        encoding="utf-8")
    load_programme(path, service.factory, settings=service.settings)

    def broadcast_of(slot_id: str) -> int | None:
        with service.factory() as session:
            return session.scalar(select(Broadcast.id).where(Broadcast.slot_id == slot_id))

    wait_for(lambda: broadcast_of("thuong") and broadcast_of("uu-tien"), 30, "both occurrences to fire")
    priority = _wait_settled(service, broadcast_of("uu-tien") or 0)
    normal = _wait_settled(service, broadcast_of("thuong") or 0)
    assert priority.scheduled_at == normal.scheduled_at == at
    assert priority.status == BroadcastStatus.COMPLETED, priority.reason
    assert normal.status == BroadcastStatus.COMPLETED, normal.reason  # played in full: not preempted
    first = {d.node_id: d for d in priority.deliveries}
    after = {d.node_id: d for d in normal.deliveries}
    assert set(first) == set(after) == {"loa-tdp1-a", "loa-tdp1-b"}
    for node, d in after.items():
        assert first[node].finished_at is not None and d.started_at is not None
        assert d.started_at >= first[node].finished_at, (node, first[node].finished_at, d.started_at)
        assert d.played_s == pytest.approx(normal.duration_s, abs=0.5)
