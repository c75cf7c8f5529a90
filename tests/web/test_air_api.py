"""POST /api/v1/broadcasts (air now): who may, what is refused. Airing for real is in test_console.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from radio.db import migrate
from radio.schedule.loader import load_programme
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app
from tests.conftest import DEMO, role_headers


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    service = Service(make_settings())
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    headers = role_headers(service)
    app = create_app(service, manage=False)
    with TestClient(app) as c:
        yield c, headers
    service.engine.dispose()


def test_only_approvers_air_now_and_bad_requests_are_refused(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """Officers and auditors get 403; unknown zone, unapproved bulletin, missing or double source are refused."""
    c, headers = client
    body = {"bulletin_id": "nhac-lich-mot-cua", "zones": ["tdp-1"]}
    assert c.post("/api/v1/broadcasts", json=body).status_code == 401
    for role in ("officer", "auditor", "node"):
        assert c.post("/api/v1/broadcasts", json=body, headers=headers[role]).status_code == 403, role
    approver = headers["approver"]
    r = c.post("/api/v1/broadcasts", json={"bulletin_id": "doi-thoai-nhan-dan"}, headers=approver)
    assert r.status_code == 409 and "chưa được phê duyệt" in str(r.json()["detail"])
    r = c.post("/api/v1/broadcasts", json={"bulletin_id": "nhac-lich-mot-cua", "zones": ["tdp-99"]}, headers=approver)
    assert r.status_code == 422 and "tdp-99" in str(r.json()["detail"])
    assert c.post("/api/v1/broadcasts", json={"asset_id": "khong-co"}, headers=approver).status_code == 404
    assert c.post("/api/v1/broadcasts", json={}, headers=approver).status_code == 422
    both = {"asset_id": "nhac-hieu", "bulletin_id": "nhac-lich-mot-cua"}
    assert c.post("/api/v1/broadcasts", json=both, headers=approver).status_code == 422
    # Valid, but this service runs no broker: refused as unavailable rather than silently lost.
    assert c.post("/api/v1/broadcasts", json=body, headers=headers["admin"]).status_code == 503
