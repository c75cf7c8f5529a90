"""Who may do what: every route with every role, sessions with CSRF, login throttling, audit of logins."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from radio.auth import add_user
from radio.db import migrate, transaction
from radio.logbook import audit
from radio.schedule.loader import load_programme
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app
from radio.web.pages.common import PageRoute
from tests.conftest import DEMO, ROLES, role_headers

HUMANS = {"admin", "officer", "approver", "auditor"}
EDIT = {"admin", "officer"}
APPROVE = {"admin", "approver"}
PREVIEW = {"admin", "officer", "approver"}
RECORD = EDIT | APPROVE  # the recording page: officers record, approvers air recordings
PUBLIC = set(ROLES) | {None}

# The access policy, written out: (method, path) -> roles allowed. Every route the app serves is here, the
# JSON API, the HTML console and the framework's own pages alike: a new route without an entry fails the test.
MATRIX: dict[tuple[str, str], set[str | None] | set[str]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/audio/{name}"): PUBLIC,  # content-addressed by a 256-bit hash; nodes fetch it
    ("POST", "/api/v1/login"): PUBLIC,
    ("POST", "/api/v1/logout"): PUBLIC,
    ("GET", "/api/v1/me"): HUMANS,
    ("POST", "/api/v1/tokens"): HUMANS,
    ("GET", "/api/v1/users"): {"admin"},
    ("POST", "/api/v1/users"): {"admin"},
    ("POST", "/api/v1/users/{username}/password"): {"admin"},
    ("POST", "/api/v1/users/{username}/disable"): {"admin"},
    **{("GET", p): HUMANS for p in (
        "/api/v1/zones", "/api/v1/nodes", "/api/v1/slots", "/api/v1/occurrences", "/api/v1/broadcasts",
        "/api/v1/broadcasts/{broadcast_id}", "/api/v1/bulletins", "/api/v1/bulletins/{bulletin_id}",
        "/api/v1/assets", "/api/v1/calendar.ics", "/api/v1/slots/{slot_id}", "/api/v1/lexicon",
        "/api/v1/tts/normalize", "/api/v1/tts/engines")},
    ("POST", "/api/v1/slots"): EDIT,
    ("PUT", "/api/v1/slots/{slot_id}"): EDIT,
    ("DELETE", "/api/v1/slots/{slot_id}"): EDIT,
    ("POST", "/api/v1/slots/check"): EDIT,
    ("POST", "/api/v1/bulletins"): EDIT,
    ("PUT", "/api/v1/bulletins/{bulletin_id}"): EDIT,
    ("DELETE", "/api/v1/bulletins/{bulletin_id}"): EDIT,
    ("POST", "/api/v1/bulletins/{bulletin_id}/submit"): EDIT,
    ("POST", "/api/v1/bulletins/{bulletin_id}/approve"): APPROVE,
    ("POST", "/api/v1/bulletins/{bulletin_id}/return"): APPROVE,
    ("POST", "/api/v1/assets"): EDIT,
    ("POST", "/api/v1/emergency"): APPROVE,
    ("POST", "/api/v1/broadcasts"): APPROVE,  # air a recording or an approved bulletin now (radio/web/air_api.py)
    ("POST", "/api/v1/cap"): APPROVE,
    ("POST", "/api/v1/lexicon"): EDIT,
    ("DELETE", "/api/v1/lexicon/{written}"): EDIT,
    ("POST", "/api/v1/tts/preview"): PREVIEW,
    **{("GET", p): HUMANS for p in ("/api/v1/asrun", "/api/v1/reconciliation", "/api/v1/reports",
                                    "/api/v1/exchange")},
    **{("GET", p): {"admin", "auditor"} for p in ("/api/v1/audit", "/api/v1/audit/verify", "/api/v1/audit/head")},
    # Outside the OpenAPI schema: operations, the console's assets and the API's own documentation (public).
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/static/{name}"): PUBLIC,
    **{(m, p): PUBLIC for p in ("/openapi.json", "/docs", "/docs/assets/{name}") for m in ("GET", "HEAD")},
    # The HTML console (radio/web/pages): signed out, every page but the login form redirects to /login.
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/"): HUMANS,
    ("GET", "/cum-loa"): HUMANS,
    ("GET", "/cum-loa/{node_id}"): HUMANS,
    ("GET", "/phat/{broadcast_id}"): HUMANS,
    ("GET", "/ban-tin"): PREVIEW,
    ("GET", "/ban-tin/moi"): EDIT,
    ("POST", "/ban-tin/moi"): EDIT,
    ("GET", "/ban-tin/{bulletin_id}"): PREVIEW,
    ("POST", "/ban-tin/{bulletin_id}"): EDIT,
    ("POST", "/ban-tin/{bulletin_id}/nghe-thu"): PREVIEW,
    ("POST", "/ban-tin/{bulletin_id}/duyet"): APPROVE,
    ("POST", "/ban-tin/{bulletin_id}/tra-lai"): APPROVE,
    ("POST", "/ban-tin/{bulletin_id}/xoa"): EDIT,
    ("GET", "/lich-phat"): HUMANS,
    ("GET", "/lich-phat/moi"): EDIT,
    ("POST", "/lich-phat/moi"): EDIT,
    ("POST", "/lich-phat/kiem-tra"): EDIT,
    ("GET", "/lich-phat/{slot_id}"): HUMANS,
    ("POST", "/lich-phat/{slot_id}"): EDIT,
    ("POST", "/lich-phat/{slot_id}/xoa"): EDIT,
    ("GET", "/khan-cap"): APPROVE,
    ("POST", "/khan-cap"): APPROVE,
    ("POST", "/khan-cap/phat"): APPROVE,
    ("GET", "/thu-am"): RECORD,
    ("POST", "/thu-am"): EDIT,
    ("POST", "/thu-am/{asset_id}/phat"): APPROVE,
    ("GET", "/nhat-ky"): HUMANS,
    ("GET", "/nhat-ky.csv"): HUMANS,
}
SAMPLE = {"name": "0" * 64 + ".mp3", "username": "r-spare", "broadcast_id": "1", "bulletin_id": "nhac-lich-mot-cua",
          "slot_id": "nhac-lich-mot-cua", "written": "UBND", "node_id": "loa-tdp1-a", "asset_id": "nhac-hieu"}
STATIC_SAMPLE = {"/static/{name}": {"name": "app.css"}}


def served_routes(app: Any) -> dict[tuple[str, str], bool]:
    """Every (method, path) the app answers, from ``app.routes`` (not the OpenAPI schema, which hides the
    console and the docs); the value says whether it is a console page (signed out: a redirect to /login)."""
    try:  # FastAPI ≥ 0.165 keeps included routers lazily; this walks them as the router does
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        contexts: list[Any] = list(app.routes)
        originals = contexts
    else:
        contexts = list(iter_route_contexts(app.routes))
        originals = [c.original_route for c in contexts]
    routes: dict[tuple[str, str], bool] = {}
    for route, original in zip(contexts, originals, strict=True):
        if not isinstance(original, APIRoute | Route):
            raise AssertionError(f"a route of an unexpected kind: {original!r} (add it to the matrix walk)")
        for method in route.methods or ():
            routes[(method, route.path)] = isinstance(original, PageRoute)
    return routes


@pytest.fixture
def app_and_headers(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    service = Service(make_settings())
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=service.settings)
    headers = role_headers(service)
    with transaction(service.factory) as session:  # the account the user-admin routes act on
        add_user(session, username="r-spare", password="mat-khau-thu", role="auditor")
    with TestClient(create_app(service, manage=False)) as client:
        yield client, headers
    service.engine.dispose()


def test_every_route_with_every_role(app_and_headers: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """Each route, JSON or HTML, with every role and signed out: the API answers 401 signed out, the console
    redirects to the login form; roles outside the policy get 403; allowed roles get in."""
    client, headers = app_and_headers
    routes = served_routes(client.app)
    assert set(routes) - set(MATRIX) == set(), "routes without a policy entry (add them to MATRIX)"
    assert set(MATRIX) - set(routes) == set(), "MATRIX entries for routes the app no longer serves"
    assert sum(routes.values()) >= 30  # the console's pages are walked too, not only the schema's operations
    for (method, path), allowed in sorted(MATRIX.items()):
        url = path.format(**{**SAMPLE, **STATIC_SAMPLE.get(path, {})})
        page = routes[(method, path)]
        for role in (*ROLES, None):
            data = {"csrf_token": login_form_token(client)} if (method, path) == ("POST", "/login") else None
            r = client.request(method, url, headers=headers[role] if role else {}, data=data, follow_redirects=False)
            where = (method, path, role, r.status_code)
            to_login = r.status_code == 303 and r.headers["location"].startswith("/login?next=")
            if role in allowed:
                assert r.status_code not in (401, 403) and not to_login, where
                assert r.status_code < 500 or r.status_code == 503, where  # 503: no broker here
            elif role is None and page:
                assert to_login, where
            elif role is None:
                assert r.status_code == 401, where
            else:
                assert r.status_code == 403, where


def login_form_token(client: TestClient) -> str:
    """Open the login form as a browser does: the pre-session cookie is set and the form carries its token."""
    r = client.get("/login")
    assert r.status_code == 200 and "radio_login_csrf" in client.cookies
    found = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert found, "the login form carries no CSRF token"
    return found.group(1)


def test_cookie_session_needs_csrf_on_changes(app_and_headers: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """A browser session reads freely but changes only with its CSRF token; the cookie is HttpOnly and Lax."""
    client, _ = app_and_headers
    r = client.post("/api/v1/login", json={"username": "r-officer", "password": "mat-khau-thu"})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    csrf = r.json()["csrf_token"]
    assert client.get("/api/v1/me").json()["username"] == "r-officer"
    body = {"id": "tin-csrf", "title": "Thử", "text": "Thử."}
    assert client.post("/api/v1/bulletins", json=body).status_code == 403
    assert client.post("/api/v1/bulletins", json=body, headers={"X-CSRF-Token": "sai"}).status_code == 403
    assert client.post("/api/v1/bulletins", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    client.post("/api/v1/logout")
    client.cookies.clear()
    assert client.get("/api/v1/me").status_code == 401


def test_password_change_and_disable_end_sessions(
    app_and_headers: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    """Changing a password ends that user's open sessions; a disabled user can neither log in nor use tokens."""
    client, headers = app_and_headers
    client.post("/api/v1/login", json={"username": "r-approver", "password": "mat-khau-thu"})
    assert client.get("/api/v1/me").status_code == 200
    assert client.post("/api/v1/users/r-approver/password", json={"password": "mat-khau-moi-2"},
                       headers=headers["admin"]).status_code == 204
    assert client.get("/api/v1/me").status_code == 401
    client.cookies.clear()
    assert client.post("/api/v1/users/r-auditor/disable", headers=headers["admin"]).status_code == 200
    assert client.get("/api/v1/me", headers=headers["auditor"]).status_code == 401
    r = client.post("/api/v1/login", json={"username": "r-auditor", "password": "mat-khau-thu"})
    assert r.status_code == 401


def test_login_is_throttled_and_every_attempt_audited(
    app_and_headers: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    """Five wrong passwords lock the account for a while (429 even with the right one); failures are audited."""
    client, _ = app_and_headers
    for _ in range(5):
        r = client.post("/api/v1/login", json={"username": "r-officer", "password": "doan-mo"})
        assert r.status_code == 401 and "không đúng" in r.json()["detail"]
    r = client.post("/api/v1/login", json={"username": "r-officer", "password": "mat-khau-thu"})
    assert r.status_code == 429
    r = client.post("/api/v1/login", json={"username": "khong-ton-tai", "password": "x"})
    assert r.status_code in (401, 429)
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        total, rows = audit.entries(session, action=audit.USER_LOGIN_FAILED, limit=100)
        assert total == 7 and {r.after["reason"] for r in rows} >= {"bad credentials", "throttled"}
        assert audit.verify(session).ok


def test_passwords_are_stored_with_argon2(app_and_headers: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """Stored password hashes are argon2id, never the password."""
    from sqlalchemy import select

    from radio.models import User

    client, _ = app_and_headers
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        hashes = list(session.scalars(select(User.password_hash)))
    assert hashes and all(h.startswith("$argon2id$") and "mat-khau-thu" not in h for h in hashes)


def test_api_docs_work_offline(app_and_headers: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """/docs loads Swagger UI from this server (a ward office may have no Internet), never from a CDN."""
    client, _headers = app_and_headers
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for url in assets:
        got = client.get(url)
        assert got.status_code == 200 and len(got.content) > 500, url
    assert client.get("/docs/assets/..%2Fapp.py").status_code == 404
