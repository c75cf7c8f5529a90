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

from radio.db import migrate, transaction
from radio.models import Alert, Broadcast, BroadcastStatus, Delivery, DeliveryState, ServiceMark, utcnow
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
