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
