"""Logging in and out: CSRF before and after the session exists, cookie flags, audit of successes, throttling.

Login CSRF is an attacker's page posting *its own* credentials to the console so that the victim works,
unknowingly, in the attacker's account. The login form is protected by a signed double-submit token
(the ``radio_login_csrf`` cookie and the same token in the form); the JSON login accepts only JSON,
which another site cannot send without a CORS preflight, and both refuse what a browser marks cross-site.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from radio.auth import LoginThrottle, add_user
from radio.db import migrate, transaction
from radio.logbook import audit
from radio.logbook.audit import AuditEntry
from radio.service import Service
from radio.settings import Settings
from radio.web.app import create_app

PASSWORD = "mat-khau-thu"
OFFICER = {"username": "r-officer", "password": PASSWORD}


def make_app(settings: Settings) -> tuple[Service, TestClient]:
    service = Service(settings)
    migrate(service.engine)
    with transaction(service.factory) as session:
        for name, role in (("r-officer", "officer"), ("r-auditor", "auditor"), ("ke-gian", "officer")):
            add_user(session, username=name, password=PASSWORD, role=role)
    return service, TestClient(create_app(service, manage=False), base_url=str(settings.public_base_url))


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    service, client = make_app(make_settings())
    with client:
        yield client
    service.engine.dispose()


def form_token(client: TestClient, url: str = "/login") -> str:
    r = client.get(url)
    assert r.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]*)"', r.text)
    assert found and found.group(1), "the login form carries no CSRF token"
    return found.group(1)


def session_cookie(client: TestClient) -> str | None:
    return client.cookies.get("radio_session")


# login CSRF ------------------------------------------------------------------------------------------
def test_the_login_form_signs_in_with_its_own_token(client: TestClient) -> None:
    """As a browser does it: open the form (cookie + hidden token), send it, land on the page asked for."""
    token = form_token(client, "/login?next=/lich-phat")
    assert "radio_login_csrf" in client.cookies
    assert form_token(client) == token  # reloading the form keeps the same token while it is valid
    r = client.post("/login", data={**OFFICER, "next": "/lich-phat", "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/lich-phat"
    assert session_cookie(client)
    assert "radio_login_csrf" not in client.cookies  # used up; the next form gets a new one
    assert client.get("/lich-phat").status_code == 200


@pytest.mark.parametrize("how", ["no token", "no cookie", "another browser's token", "unsigned cookie"])
def test_a_login_form_without_its_token_is_refused(client: TestClient, how: str) -> None:
    """A cross-site form (the attacker's page) cannot know the token tied to the victim's cookie: no session."""
    token = form_token(client)
    data = {**OFFICER, "csrf_token": token}
    if how == "no token":
        del data["csrf_token"]
    elif how == "no cookie":
        client.cookies.clear()
    elif how == "another browser's token":
        with TestClient(client.app, base_url=str(client.base_url)) as other:
            data["csrf_token"] = form_token(other)
    else:  # the token itself as the cookie: not signed with the server's key
        client.cookies.clear()
        client.cookies.set("radio_login_csrf", token)
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 403
    assert "Trang đăng nhập đã hết hạn" in r.text and 'name="csrf_token"' in r.text  # a fresh form to retry
    assert session_cookie(client) is None
    retry = form_token(client)  # the page refused carries a usable token: the user just sends again
    assert client.post("/login", data={**OFFICER, "csrf_token": retry}, follow_redirects=False).status_code == 303


def test_a_refused_login_form_is_neither_throttled_nor_checked(client: TestClient) -> None:
    """Without its token the form is refused before the password is looked at: nothing audited or counted."""
    for _ in range(8):
        assert client.post("/login", data=OFFICER, follow_redirects=False).status_code == 403
    token = form_token(client)
    assert client.post("/login", data={**OFFICER, "csrf_token": token}, follow_redirects=False).status_code == 303


def test_a_cross_site_login_is_refused_even_with_a_token(client: TestClient) -> None:
    token = form_token(client)
    for headers in ({"Origin": "https://ke-gian.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = client.post("/login", data={**OFFICER, "csrf_token": token}, headers=headers, follow_redirects=False)
        assert r.status_code == 403, headers
        assert session_cookie(client) is None
    same = {"Origin": str(client.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    r = client.post("/login", data={**OFFICER, "csrf_token": token}, headers=same, follow_redirects=False)
    assert r.status_code == 303


@pytest.mark.parametrize("origin", ["null", "https"])
def test_login_behind_a_tls_proxy_or_with_a_null_origin(client: TestClient, origin: str) -> None:
    """Behind a TLS proxy the browser's origin is https while the app sees http, and privacy settings or a
    no-referrer policy send ``Origin: null``: neither is another site, so a login with the form's token works."""
    if origin == "https":
        origin = f"https://{client.base_url.netloc.decode()}"
    token = form_token(client)
    r = client.post("/login", data={**OFFICER, "csrf_token": token}, headers={"Origin": origin},
                    follow_redirects=False)
    assert r.status_code == 303 and session_cookie(client) is not None


def test_the_json_login_takes_only_same_site_json(client: TestClient) -> None:
    """What a cross-site form or a no-cors fetch can send (form or text/plain bodies) never signs in."""
    body = '{"username": "r-officer", "password": "mat-khau-thu"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = client.post("/api/v1/login", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 415, ctype
    r = client.post("/api/v1/login", json=OFFICER, headers={"Origin": "https://ke-gian.example"})
    assert r.status_code == 403
    r = client.post("/api/v1/login", json=OFFICER, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert session_cookie(client) is None
    assert client.post("/api/v1/login", json=OFFICER).status_code == 200  # scripts and the API client


# logout CSRF -----------------------------------------------------------------------------------------
def test_logout_needs_the_sessions_token(client: TestClient) -> None:
    """A cross-site form cannot sign the officer out; the menu's form (with the token) does."""
    token = form_token(client)
    client.post("/login", data={**OFFICER, "csrf_token": token})
    page = client.get("/")
    csrf = re.search(r'action="/logout"><input type="hidden" name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, "the menu's logout form carries no token"
    for data in ({}, {"csrf_token": "sai"}):
        r = client.post("/logout", data=data, follow_redirects=False)
        assert r.status_code == 403 and "Phiên làm việc đã thay đổi" in r.text
        assert client.get("/api/v1/me").status_code == 200  # still signed in
    r = client.post("/logout", data={"csrf_token": csrf.group(1)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert session_cookie(client) is None and client.get("/api/v1/me").status_code == 401


def test_the_api_logout_needs_the_sessions_token(client: TestClient) -> None:
    csrf = client.post("/api/v1/login", json=OFFICER).json()["csrf_token"]
    assert client.post("/api/v1/logout").status_code == 403
    assert client.post("/api/v1/logout", headers={"X-CSRF-Token": "sai"}).status_code == 403
    assert client.get("/api/v1/me").status_code == 200
    assert client.post("/api/v1/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert session_cookie(client) is None and client.get("/api/v1/me").status_code == 401
    assert client.post("/api/v1/logout").status_code == 204  # signed out already: nothing to protect


# cookies ---------------------------------------------------------------------------------------------
def cookie_flags(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(";")[1:]}


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_cookie_flags(make_settings: Callable[..., Settings], scheme: str) -> None:
    """Session and login cookies: HttpOnly, SameSite=Lax, Path=/; ``Secure`` when served over https."""
    service, client = make_app(make_settings(public_base_url=f"{scheme}://radio.phuong.example"))
    with client:
        r = client.get("/login")
        login_cookie = r.headers["set-cookie"]
        token = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
        r = client.post("/login", data={**OFFICER, "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303
        session = next(h for h in r.headers.get_list("set-cookie") if h.startswith("radio_session="))
        r = client.post("/api/v1/login", json=OFFICER)
        api_session = r.headers["set-cookie"]
    for header in (login_cookie, session, api_session):
        flags = cookie_flags(header)
        assert {"httponly", "samesite=lax", "path=/"} <= flags, header
        assert ("secure" in flags) is (scheme == "https"), header
    service.engine.dispose()


# audit and throttling --------------------------------------------------------------------------------
def test_a_successful_login_is_audited_with_the_address(client: TestClient) -> None:
    client.post("/api/v1/login", json=OFFICER)
    token = form_token(client)
    client.post("/login", data={"username": "r-auditor", "password": PASSWORD, "csrf_token": token})
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "user.login")
                                    .order_by(AuditEntry.id)))
        assert [(r.actor, r.entity_id, r.after) for r in rows] == [
            ("r-officer", "r-officer", {"client": "testclient"}), ("r-auditor", "r-auditor", {"client": "testclient"})]
        assert audit.verify(session).ok


def test_one_address_guessing_many_names_is_throttled(client: TestClient) -> None:
    """Five failures from one address, each for another user name, stop that address (even with a right
    password) while another address still logs in."""
    for n in range(5):
        r = client.post("/api/v1/login", json={"username": f"doan-{n}", "password": "doan-mo"})
        assert r.status_code == 401
    assert client.post("/api/v1/login", json=OFFICER).status_code == 429
    token = form_token(client)
    assert client.post("/login", data={**OFFICER, "csrf_token": token}).status_code == 429  # the page shares it
    with TestClient(client.app, client=("10.0.0.2", 50000)) as elsewhere:
        assert elsewhere.post("/api/v1/login", json=OFFICER).status_code == 200
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    with service.factory() as session:
        _total, rows = audit.entries(session, action=audit.USER_LOGIN_FAILED, limit=20)
        assert sorted((r.after or {}).get("reason", "") for r in rows) == ["bad credentials"] * 5 + ["throttled"] * 2
        assert {(r.after or {}).get("client") for r in rows} == {"testclient"}


def test_the_throttle_forgets_names_but_not_a_guessing_address() -> None:
    """Made-up user names cannot grow memory without bound, nor push a throttled address out."""
    throttle = LoginThrottle(limit=5, window_s=300, max_keys=100)
    for n in range(5000):
        assert not throttle.blocked(f"user:ten-{n}", "addr:10.0.0.9") or n >= 5
        throttle.failed(f"user:ten-{n}", "addr:10.0.0.9")
    assert len(throttle) <= 101
    assert throttle.blocked("user:ai-do", "addr:10.0.0.9")
    assert not throttle.blocked("user:ai-do", "addr:10.0.0.10")
    for n in range(5000):  # looking up names that never failed keeps nothing
        throttle.blocked(f"user:chua-thu-{n}", "addr:10.0.0.11")
    assert len(throttle) <= 101


# the first administrator -----------------------------------------------------------------------------
def test_the_first_admin_password_is_shown_once_but_never_logged(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    """Printed to the console and kept in data/admin-password.txt (0600); log files never get it."""
    settings = make_settings(admin_password=None)
    service = Service(settings)
    migrate(service.engine)
    with caplog.at_level(logging.DEBUG):
        service._first_admin()  # noqa: SLF001 - what start() does first
    path = settings.data_dir / "admin-password.txt"
    password = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password and password in capsys.readouterr().out
    assert all(password not in record.getMessage() for record in caplog.records)
    assert any("admin-password.txt" in record.getMessage() for record in caplog.records)
    with TestClient(create_app(service, manage=False)) as client:
        assert client.post("/api/v1/login", json={"username": "admin", "password": password}).status_code == 200
    service.engine.dispose()
