"""Slot CRUD through the API: the programme file's shape, the same rules, audited changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from radio.db import migrate
from radio.logbook import audit
from radio.schedule.loader import load_programme
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app
from tests.conftest import DEMO, role_headers

SLOT = {"id": "tin-trua", "name": "Bản tin trưa", "segment": "cchc", "time": "11:30", "days": ["mon", "wed"],
        "zones": ["tdp-3"], "play": ["muc-tieu-hai-long-99"]}


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    service = Service(make_settings(quiet_hours="21:30-06:00"))
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    with TestClient(create_app(service, manage=False)) as client:
        client.headers.update(role_headers(service)["officer"])
        yield client
    service.engine.dispose()


def test_create_read_update_delete_a_slot(client: TestClient) -> None:
    """A slot is created, read back, changed and deleted; each change lands in the audit trail."""
    r = client.post("/api/v1/slots", json=SLOT)
    assert r.status_code == 201, r.text
    assert r.json()["zone_ids"] == ["tdp-3"] and r.json()["weekdays"] == "mon,wed"
    assert client.post("/api/v1/slots", json=SLOT).status_code == 409
    assert client.get("/api/v1/slots/tin-trua").json()["start_time"] == "11:30"
    changed = {**SLOT, "time": "11:45", "play": ["muc-tieu-hai-long-99", {"relay": "http://127.0.0.1:9/live",
                                                                          "minutes": 5}]}
    r = client.put("/api/v1/slots/tin-trua", json=changed)
    assert r.status_code == 200 and r.json()["playlist"][1].startswith("relay:")
    assert client.delete("/api/v1/slots/tin-trua").status_code == 204
    assert client.get("/api/v1/slots/tin-trua").status_code == 404
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        _total, rows = audit.entries(session, limit=50)
        assert {"slot.created", "slot.updated", "slot.deleted"} <= {e.action for e in rows}
        assert {e.actor for e in rows if e.action.startswith("slot.") and e.entity_id == "tin-trua"} == {"r-officer"}
        assert audit.verify(session).ok


def test_overlap_at_the_same_priority_is_refused_naming_both_slots(client: TestClient) -> None:
    """A slot overlapping another on a shared zone at the same priority is refused, naming both and the time."""
    clash = {**SLOT, "id": "trung-gio", "time": "17:00", "days": ["mon"], "zones": ["tdp-1"]}
    check = client.post("/api/v1/slots/check", json=clash).json()
    assert check["ok"] is False and check["problems"][0]["rule"] == "conflict"
    r = client.post("/api/v1/slots", json=clash)
    assert r.status_code == 422
    body = r.json()
    assert "trung-gio" in body["detail"][0]["msg"] and "chieu-ngay-thuong" in body["detail"][0]["msg"]
    assert body["problems"][0]["at"] and body["problems"][0]["other_slot_id"] == "chieu-ngay-thuong"
    assert client.get("/api/v1/slots/trung-gio").status_code == 404  # nothing half-written
    ok = client.post("/api/v1/slots", json={**clash, "priority": "ưu tiên"})
    assert ok.status_code == 201  # a priority item may overlap a normal one: it goes first on air


def test_quiet_hours_and_session_caps_are_enforced(client: TestClient) -> None:
    """A 04:30 slot breaks quiet hours and a 45-minute relay breaks the session cap; an emergency slot may."""
    early = client.post("/api/v1/slots", json={**SLOT, "id": "som", "time": "04:30"})
    assert early.status_code == 422 and early.json()["problems"][0]["rule"] == "quiet_hours"
    long = {**SLOT, "id": "dai", "play": [{"relay": "http://127.0.0.1:9/live", "minutes": 45}]}
    r = client.post("/api/v1/slots", json=long)
    assert r.status_code == 422 and r.json()["problems"][0]["rule"] == "session_length"
    assert client.post("/api/v1/slots", json={**SLOT, "id": "som", "time": "04:30",
                                              "priority": "khẩn cấp"}).status_code == 201


@pytest.mark.parametrize(("change", "field"), [
    ({"time": "25:00"}, "time"),
    ({"zones": ["tdp-99"]}, "zones"),
    ({"play": ["khong-co"]}, "play[0]"),
    ({"play": [{"audio": "khong-co"}]}, "play[0].audio"),
    ({"play": [{"relay": "ftp://x", "minutes": 5}]}, "relay"),
    ({"days": ["someday"]}, "days"),
    ({"play": []}, "play"),
])
def test_bad_slots_name_the_field(client: TestClient, change: dict[str, object], field: str) -> None:
    """Invalid slot input is a 422 naming the field; nothing is stored."""
    r = client.post("/api/v1/slots", json={**SLOT, **change})
    assert r.status_code == 422, r.text
    locs = [".".join(str(p) for p in err["loc"]) for err in r.json()["detail"]]
    assert any(field.replace("[", ".").replace("]", "") in loc for loc in locs), locs
    assert client.get("/api/v1/slots/tin-trua").status_code == 404


def test_preview_by_zone_includes_group_targets(client: TestClient) -> None:
    """Occurrences for a zone include slots that reach it only through a named group of nodes."""
    slots = {o["slot_id"] for o in client.get("/api/v1/occurrences", params={"days": 14, "zone": "tdp-3"}).json()}
    assert "khu-cho-cuoi-tuan" in slots  # the market group includes loa-tdp3-b
    slots = {o["slot_id"] for o in client.get("/api/v1/occurrences", params={"days": 14, "zone": "tdp-5"}).json()}
    assert "khu-cho-cuoi-tuan" not in slots


def test_slot_api_errors_are_in_vietnamese_and_name_the_field(client: TestClient) -> None:
    """Duplicate id, unknown reference, no target and an id mismatch: Vietnamese messages, fields kept."""
    assert client.post("/api/v1/slots", json=SLOT).status_code == 201
    r = client.post("/api/v1/slots", json=SLOT)
    assert r.status_code == 409 and "khung giờ «tin-trua» đã tồn tại" in r.text, r.text
    r = client.post("/api/v1/slots", json={**SLOT, "id": "khac", "segment": "khong-co"})
    assert r.status_code == 422 and "«khong-co» không tồn tại" in r.text and "segment" in r.text, r.text
    r = client.put("/api/v1/slots/tin-trua", json={**SLOT, "id": "tin-khac"})
    assert r.status_code == 422, r.text
    assert "mã khung giờ trong nội dung «tin-khac» khác mã trên đường dẫn «tin-trua»" in r.text and '"id"' in r.text
    for text in ("does not exist", "already exists", "differs from", "choose zones"):
        assert text not in r.text
    from radio.errors import InvalidInput
    from radio.schedule.loader import SlotSpec
    from radio.web import slots_api

    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session, pytest.raises(InvalidInput) as caught:
        slots_api._check_refs(session, SlotSpec.model_construct(id="x", segment=None, zones=None, groups=None,
                                                                play=[]))
    assert caught.value.where == "zones" and "hãy chọn tổ dân phố" in str(caught.value)
