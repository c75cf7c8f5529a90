"""The read-only audit API (radio.web.audit_api) through TestClient on the real app, not started (no broker needed).

The router is included as app.py will include it; a test walks every route to make sure nothing can
change or delete audit or as-run rows through HTTP.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Route

from radio.db import migrate, transaction
from radio.logbook import audit, sample
from radio.service import Service
from radio.settings import Settings
from radio.web import audit_api
from radio.web.app import create_app
from tests.conftest import role_headers

READ_ONLY_PREFIXES = ("/api/v1/asrun", "/api/v1/reconciliation", "/api/v1/audit", "/api/v1/reports",
                      "/api/v1/exchange")
AS_RUN_ROWS = ("/broadcasts", "/deliveries", "/commands")


def build_app(settings: Settings) -> FastAPI:
    service = Service(settings)
    migrate(service.engine)
    with transaction(service.factory) as s:
        sample.seed(s)
    return create_app(service, manage=False)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    app = build_app(Settings(data_dir=tmp_path / "data"))
    yield app
    app.state.service.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        test_client.headers.update(role_headers(app.state.service)["auditor"])
        yield test_client


def test_asrun_filters_and_pages(client: TestClient) -> None:
    """GET /asrun filters by period, zone and outcome, pages with limit/offset and reports the total."""
    r = client.get("/api/v1/asrun", params={"from": "2024-09-02", "to": "15/09/2024", "limit": 5, "offset": 10})
    assert r.status_code == 200
    body = r.json()
    assert (body["total"], body["limit"], body["offset"], len(body["items"])) == (13, 5, 10, 3)
    r = client.get("/api/v1/asrun", params={"from": "2024-09-13", "to": "2024-09-13", "zone": "tdp-4"})
    (item,) = r.json()["items"]
    assert (item["targeted"], item["played_fully"]) == (1, 0)
    assert {d["part"] for d in item["deliveries"]} == {0, 1}
    assert item["deliveries"][1]["reason"] == "mất luồng tiếp âm"
    assert item["scheduled_at"].startswith("2024-09-12T23:30:00")
    r = client.get("/api/v1/asrun", params={"outcome": "preempted"})
    assert r.json()["total"] == 1


def test_asrun_summary_without_deliveries(client: TestClient) -> None:
    """deliveries=false gives the same items, counts and coverage without the per-cluster lists; the full
    answer is what jsonable_encoder made of the rows before (ISO times with their offset)."""
    import dataclasses

    from fastapi.encoders import jsonable_encoder

    from radio.logbook import asrun

    params: dict[str, str | int] = {"from": "2024-09-02", "to": "2024-09-15", "limit": 20}
    full = client.get("/api/v1/asrun", params=params)
    summary = client.get("/api/v1/asrun", params={**params, "deliveries": "false"})
    assert full.status_code == summary.status_code == 200 and summary.headers["content-type"] == "application/json"
    assert len(summary.content) < len(full.content) / 3
    assert summary.json()["items"] == [{k: v for k, v in item.items() if k != "deliveries"}
                                       for item in full.json()["items"]]
    assert summary.json()["items"][0]["targeted"] and "deliveries" not in summary.json()["items"][0]
    service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        page = asrun.query(session, period=asrun.Period.parse("2024-09-02", "2024-09-15", service.settings.tz),
                           limit=20)
    assert full.json() == jsonable_encoder(dataclasses.asdict(page))
    assert full.json()["items"][0]["deliveries"][0]["issued_at"].endswith("+00:00")
    spec = client.get("/openapi.json").json()["paths"]["/api/v1/asrun"]["get"]
    assert "deliveries" in {p["name"] for p in spec["parameters"]}


def test_reconciliation(client: TestClient) -> None:
    """GET /reconciliation lists each occurrence with its category and the counts."""
    r = client.get("/api/v1/reconciliation", params={"from": "2024-09-02", "to": "2024-09-12"})
    assert r.status_code == 200
    body = r.json()
    assert body["counts"]["not_approved"] == 1 and body["counts"]["preempted"] == 1
    assert body["categories_vi"]["missed"] == "bị lỡ"
    gap = next(row for row in body["rows"] if row["scheduled_at"].startswith("2024-09-08T23:30"))
    assert gap["category"] == "missed" and gap["broadcast_id"] is None
    assert "broadcast" not in gap


def test_audit_trail_and_verify(client: TestClient, app: FastAPI) -> None:
    """GET /audit pages the trail newest first; /audit/verify and /audit/head report the chain."""
    # The sample's 8 entries, then 10 from the test accounts (5 users, 5 tokens) on top.
    r = client.get("/api/v1/audit", params={"limit": 3, "offset": 10})
    body = r.json()
    assert body["total"] == 18 and [e["id"] for e in body["items"]] == [8, 7, 6]
    assert body["items"][0]["action"] == "slot.created" and body["items"][0]["after"]["name"]
    assert client.get("/api/v1/audit", params={"action": "bulletin.approved"}).json()["total"] == 2
    head = client.get("/api/v1/audit/head").json()
    verified = client.get("/api/v1/audit/verify", params={"anchor": head["anchor"]}).json()
    assert verified["ok"] and verified["count"] == 18 and verified["head_hash"] == head["hash"]
    engine = app.state.service.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
        conn.exec_driver_sql("DELETE FROM audit_log WHERE id = 3")
    broken = client.get("/api/v1/audit/verify").json()
    assert not broken["ok"] and broken["first_broken_id"] == 3
    assert broken["reason"] == "record 3 is missing (chain jumps from 2 to 4)"
    assert client.get("/api/v1/audit/verify", params={"anchor": "x"}).status_code == 422


@pytest.mark.parametrize(("fmt", "magic", "media"), [
    ("pdf", b"%PDF", "application/pdf"),
    ("xlsx", b"PK", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("csv", b"\xef\xbb\xbf", "text/csv; charset=utf-8"),
])
def test_report_download(client: TestClient, fmt: str, magic: bytes, media: str) -> None:
    """GET /reports returns the file with its media type and a Vietnamese file name (filename*)."""
    r = client.get("/api/v1/reports", params={"from": "2024-09-02", "to": "2024-09-15", "format": fmt})
    assert r.status_code == 200 and r.content.startswith(magic)
    assert r.headers["content-type"] == media
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=\"bao-cao-phat-thanh_2024-09-02_2024-09-15.")
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == f"Báo cáo phát thanh 02-09-2024 đến 15-09-2024.{fmt}"
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert rows[0] == ["ỦY BAN NHÂN DÂN PHƯỜNG THỌ XƯƠNG"]


def test_exchange_export(client: TestClient) -> None:
    """GET /exchange returns the exchange document for the period."""
    r = client.get("/api/v1/exchange", params={"from": "2024-09-09", "to": "2024-09-15"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["schema"] == "radio.exchange/1" and len(doc["as_run"]) == 7 and doc["audit"]["chain_ok"]


def test_bad_queries_are_422(client: TestClient) -> None:
    """Bad dates, a reversed or half period, an unknown outcome or format: 422 with a Vietnamese message."""
    cases = [
        ("/api/v1/asrun", {"from": "2024-02-30", "to": "2024-03-01"}),
        ("/api/v1/asrun", {"from": "2024-09-01"}),
        ("/api/v1/asrun", {"outcome": "great"}),
        ("/api/v1/reconciliation", {"from": "2024-09-15", "to": "2024-09-01"}),
        ("/api/v1/reconciliation", {}),
        ("/api/v1/reports", {"from": "2024-09-01", "to": "2024-09-15", "format": "docx"}),
    ]
    for path, params in cases:
        r = client.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
    r = client.get("/api/v1/asrun", params={"from": "2024-02-30", "to": "2024-03-01"})
    assert "ngày không hợp lệ" in r.text


def all_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every HTTP route, descending into included routers.

    FastAPI ≥ 0.16x keeps an included router as one lazy entry holding ``original_router``; older ones copy
    its routes into ``app.routes``. Both are walked.
    """
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from all_routes(inner.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif isinstance(route, APIRoute | Route):
            yield prefix + route.path, set(route.methods or ()) - {"HEAD", "OPTIONS"}
        elif hasattr(route, "routes"):  # a mounted sub-application
            yield from all_routes(route.routes, prefix + getattr(route, "path", ""))


def test_no_route_can_change_audit_or_as_run_rows(app: FastAPI) -> None:
    """Walking every route: audit, as-run, report and export paths are GET only; nothing edits or deletes
    broadcasts, deliveries or commands."""
    routes = list(all_routes(app.routes))
    walked = {path for path, _methods in routes}
    assert set(app.openapi()["paths"]) <= walked  # the walk sees at least every documented route
    seen = set()
    for path, methods in routes:
        if path.startswith(READ_ONLY_PREFIXES):
            seen.add(path)
            assert methods == {"GET"}, (path, methods)
        if any(part in path for part in AS_RUN_ROWS):
            assert not methods & {"PUT", "PATCH", "DELETE"}, (path, methods)
    assert {"/api/v1/asrun", "/api/v1/audit", "/api/v1/audit/verify", "/api/v1/audit/head", "/api/v1/reports",
            "/api/v1/exchange", "/api/v1/reconciliation"} <= seen
    assert all(methods == {"GET"} for _path, methods in all_routes(audit_api.router.routes))


def test_audit_rows_cannot_be_written_by_any_http_method(client: TestClient) -> None:
    """POST, PUT, PATCH and DELETE on the audit and as-run paths are refused (405) and change nothing."""
    before = client.get("/api/v1/audit/head").json()
    for path in ("/api/v1/audit", "/api/v1/asrun", "/api/v1/audit/verify"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert client.request(method, path).status_code == 405, (method, path)
    assert client.get("/api/v1/audit/head").json() == before
    assert before["id"] == 18 and len(before["hash"]) == 64 and before["hash"] != audit.GENESIS


# past reports do not change when slots do ------------------------------------------------------------------
REPORT = {"from": "2024-09-02", "to": "2024-09-15", "format": "csv"}
STAMPS = ("Thời điểm lập", "Nhật ký kiểm toán", "Kiểm tra chuỗi nhật ký")  # when it was made, the chain head


def _report_body(client: TestClient) -> list[str]:
    r = client.get("/api/v1/reports", params=REPORT)
    assert r.status_code == 200, r.text
    return [line for line in r.content.decode("utf-8-sig").splitlines() if not line.startswith(STAMPS)]


def _reconciliation(client: TestClient) -> list[tuple[object, ...]]:
    body = client.get("/api/v1/reconciliation", params={"from": REPORT["from"], "to": REPORT["to"]}).json()
    return [(r["scheduled_at"], r["slot_id"], r["segment_id"], r["category"], r["planned"], r["reach_zones"],
             r["whole_ward"], r["airtime_s"]) for r in body["rows"]]


def test_deleting_disabling_or_resegmenting_slots_does_not_change_past_reports(app: FastAPI) -> None:
    """A past period's report and reconciliation are the same before and after slots are changed through
    the API: re-segmented (its broadcasts stay under the segment they aired in), disabled, and deleted
    (its broadcasts stay linked to it; its occurrence that left no row stays 'missed')."""
    headers = role_headers(app.state.service)
    with TestClient(app) as client:
        client.headers.update(headers["officer"])
        report, recon = _report_body(client), _reconciliation(client)
        assert any(line.startswith("Chuyển đổi số,8,6,") for line in report), report
        morning = {"id": "sang-ngay-thuong", "name": "Bản tin sáng ngày thường", "segment": "cqtt", "time": "06:30",
                   "days": ["mon", "tue", "wed", "thu", "fri"], "holidays": "skip", "from": "2024-08-26",
                   "zones": "all", "play": ["dvc-truc-tuyen"]}
        r = client.put("/api/v1/slots/sang-ngay-thuong", json=morning)
        assert r.status_code == 200, r.text
        afternoon = {"id": "chieu-t3-t5", "name": "Hỗ trợ người dân tại Bộ phận Một cửa", "segment": "cqtt",
                     "time": "17:00", "days": ["tue", "thu"], "from": "2024-08-26", "zones": ["tdp-1", "tdp-2"],
                     "play": ["doan-thanh-nien-mot-cua"], "enabled": False}
        r = client.put("/api/v1/slots/chieu-t3-t5", json=afternoon)
        assert r.status_code == 200, r.text
        assert _report_body(client) == report and _reconciliation(client) == recon
        assert client.delete("/api/v1/slots/sang-ngay-thuong").status_code == 204
        assert client.delete("/api/v1/slots/chieu-t3-t5").status_code == 204
        assert _report_body(client) == report
        assert _reconciliation(client) == recon
        asrun = client.get("/api/v1/asrun", params={"from": "2024-09-04", "to": "2024-09-04"}).json()["items"]
        assert [(b["slot_id"], b["segment_id"]) for b in asrun] == [("sang-ngay-thuong", "cds")]


def test_reconciliation_filters_by_priority_and_outcome_and_pages(client: TestClient) -> None:
    """GET /reconciliation narrows by priority and outcome (one or several, comma-separated) and pages with
    limit/offset; total and counts cover every matching row, whatever the page."""
    period = {"from": "2024-09-02", "to": "2024-09-15"}
    everything = client.get("/api/v1/reconciliation", params=period).json()
    assert everything["total"] == len(everything["rows"]) == 15 and everything["offset"] == 0
    urgent = client.get("/api/v1/reconciliation", params={**period, "priority": "emergency"}).json()
    assert [r["kind"] for r in urgent["rows"]] == ["emergency"] and urgent["total"] == 1
    bad = client.get("/api/v1/reconciliation", params={**period, "outcome": "missed,not_approved"}).json()
    assert {r["category"] for r in bad["rows"]} == {"missed", "not_approved"}
    assert bad["total"] == everything["counts"]["missed"] + everything["counts"]["not_approved"]
    assert bad["counts"]["aired"] == 0
    pages = [client.get("/api/v1/reconciliation", params={**period, "limit": 4, "offset": o}).json()
             for o in (0, 4, 8, 12)]
    assert [len(p["rows"]) for p in pages] == [4, 4, 4, 3] and {p["total"] for p in pages} == {15}
    assert [r for p in pages for r in p["rows"]] == everything["rows"]
    assert pages[1]["counts"] == everything["counts"]
    bad_params: list[tuple[dict[str, str | int], str]] = [
        ({"priority": "urgent"}, "priority"), ({"outcome": "aired,great"}, "outcome"), ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset")]
    for params, field in bad_params:
        r = client.get("/api/v1/reconciliation", params={**period, **params})
        assert r.status_code == 422, (params, r.text)
        assert field in r.text


@pytest.mark.parametrize("path", ["/api/v1/asrun", "/api/v1/reconciliation", "/api/v1/reports", "/api/v1/exchange",
                                  "/nhat-ky"])
@pytest.mark.parametrize(("first", "last", "field"), [("0001-01-01", "2024-09-15", "from"),
                                                      ("2024-09-01", "9999-12-31", "to"),
                                                      ("31/12/9999", "31/12/9999", "from")])
def test_dates_outside_2000_2100_are_a_vietnamese_422(client: TestClient, path: str, first: str, last: str,
                                                      field: str) -> None:
    """Year 1 or 9999 used to overflow (HTTP 500); now a 422 naming the field and the allowed years."""
    if path == "/nhat-ky":  # the page shows the message above its (empty) table
        r = client.get(path, params={"tu": first, "den": last})
        assert r.status_code in (200, 422) and "năm 2000 đến năm 2100" in r.text, r.text[:500]
        return
    r = client.get(path, params={"from": first, "to": last, "format": "csv"})
    assert r.status_code == 422, r.text
    assert "nằm ngoài khoảng cho phép (năm 2000 đến năm 2100)" in r.text and field in r.text


# what each change writes in the audit trail ------------------------------------------------------------------
def _latest(client: TestClient, action: str) -> dict[str, object]:
    """The newest audit entry with that action, read back through GET /audit as an auditor."""
    body = client.get("/api/v1/audit", params={"action": action, "limit": 1}).json()
    assert body["total"] >= 1, action
    return body["items"][0]  # type: ignore[no-any-return]


def test_bulletin_update_and_approval_are_audited_with_before_and_after(app: FastAPI) -> None:
    """bulletin.approved records the approver and the status change; bulletin.updated records the old and new
    text, and that editing sent the approved bulletin back to draft."""
    headers = role_headers(app.state.service)
    with TestClient(app) as client:
        r = client.post("/api/v1/bulletins/muc-tieu-hai-long-99/approve", headers=headers["approver"])
        assert r.status_code == 200, r.text
        client.headers.update(headers["auditor"])
        approved = _latest(client, "bulletin.approved")
        assert (approved["actor"], approved["entity_type"], approved["entity_id"]) == (
            "r-approver", "bulletin", "muc-tieu-hai-long-99")
        before, after = approved["before"], approved["after"]
        assert isinstance(before, dict) and isinstance(after, dict)
        assert (before["status"], before["approved_by"]) == ("submitted", None)
        assert (after["status"], after["approved_by"]) == ("approved", "r-approver") and after["approved_at"]
        assert after["text"] == before["text"] == sample.TEXT_HAI_LONG

        new_text = "Phấn đấu 100% người dân hài lòng khi giải quyết thủ tục hành chính tại phường."
        r = client.put("/api/v1/bulletins/muc-tieu-hai-long-99", headers=headers["officer"],
                       json={"title": "Phấn đấu 100% người dân hài lòng", "text": new_text, "segment_id": "cchc"})
        assert r.status_code == 200, r.text
        updated = _latest(client, "bulletin.updated")
        assert (updated["actor"], updated["entity_id"]) == ("r-officer", "muc-tieu-hai-long-99")
        before, after = updated["before"], updated["after"]
        assert isinstance(before, dict) and isinstance(after, dict)
        assert (before["text"], before["status"], before["approved_by"]) == (sample.TEXT_HAI_LONG, "approved",
                                                                             "r-approver")
        assert (after["text"], after["title"], after["status"], after["approved_by"]) == (
            new_text, "Phấn đấu 100% người dân hài lòng", "draft", None)
        assert client.get("/api/v1/audit/verify").json()["ok"]


def test_emergency_trigger_is_audited_with_its_text_and_zones(app: FastAPI) -> None:
    """emergency.triggered names the approver, the bulletin made for it, its text, zones and segment."""
    from types import SimpleNamespace

    service = app.state.service
    aired: list[object] = []

    def air(plan: object) -> int:
        aired.append(plan)
        return 99

    service.broadcaster = SimpleNamespace(factory=service.factory, air=air)
    service.mqtt = SimpleNamespace(connected=True)
    headers = role_headers(service)
    text = "Thông báo khẩn: nước sông Thương lên nhanh, bà con TDP 1 di chuyển tài sản lên cao."
    with TestClient(app) as client:
        r = client.post("/api/v1/emergency", headers=headers["approver"],
                        json={"text": text, "title": "Khẩn: nước lên", "zones": ["tdp-1"]})
        assert r.status_code == 201, r.text
        assert r.json()["broadcast_id"] == 99 and len(aired) == 1
        client.headers.update(headers["auditor"])
        entry = _latest(client, "emergency.triggered")
    assert entry["actor"] == "r-approver" and entry["entity_type"] == "bulletin" and entry["before"] is None
    after = entry["after"]
    assert isinstance(after, dict)
    assert after["id"] == entry["entity_id"] and str(after["id"]).startswith("khan-cap-")
    assert (after["text"], after["title"], after["status"], after["approved_by"]) == (
        text, "Khẩn: nước lên", "approved", "r-approver")
    assert after["zones"] == ["tdp-1"] and after["segment_id"] == "khan-cap"


def test_user_changes_are_audited_without_secrets(app: FastAPI) -> None:
    """user.created, user.updated (password, disabled) and user.login_failed are recorded with who did it and
    what changed; no password or hash is ever written to the trail."""
    headers = role_headers(app.state.service)
    with TestClient(app) as client:
        admin = headers["admin"]
        r = client.post("/api/v1/users", headers=admin,
                        json={"username": "can-bo-moi", "password": "mat-khau-rat-dai-1", "role": "officer",
                              "full_name": "Nguyễn Văn Mới"})
        assert r.status_code == 201, r.text
        assert client.post("/api/v1/users/can-bo-moi/password", headers=admin,
                           json={"password": "mat-khau-moi-dai-2"}).status_code == 204
        password_entry = client.get("/api/v1/audit", headers=headers["auditor"],
                                    params={"action": "user.updated", "entity_id": "can-bo-moi"}).json()["items"][0]
        assert client.post("/api/v1/users/can-bo-moi/disable", headers=admin).status_code == 200
        refused = client.post("/api/v1/login", json={"username": "can-bo-moi", "password": "sai-mat-khau-roi"},
                              headers={"Origin": "http://testserver"})
        assert refused.status_code in (401, 403, 429), refused.text
        client.headers.update(headers["auditor"])
        trail = client.get("/api/v1/audit", params={"entity_type": "user", "entity_id": "can-bo-moi", "limit": 20})
        entries = trail.json()["items"]
    by_action: dict[str, list[dict[str, object]]] = {}
    for e in entries:
        by_action.setdefault(str(e["action"]), []).append(e)
    (created,) = by_action["user.created"]
    assert created["actor"] == "r-admin" and created["before"] is None
    assert created["after"] == {"username": "can-bo-moi", "full_name": "Nguyễn Văn Mới", "role": "officer",
                                "disabled": False}
    assert password_entry["actor"] == "r-admin" and password_entry["after"] == {"password": "changed"}
    disabled = by_action["user.updated"][0]  # newest first
    assert disabled["actor"] == "r-admin"
    assert (disabled["before"]["disabled"], disabled["after"]["disabled"]) == (False, True)  # type: ignore[index]
    assert "user.login_failed" in by_action and by_action["user.login_failed"][0]["actor"] == "can-bo-moi"
    dumped = str(entries)
    assert "mat-khau" not in dumped and "sai-mat-khau" not in dumped and "$" not in dumped
