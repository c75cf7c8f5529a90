"""Đăng nhập / đăng xuất with the same throttled login and session cookie as POST /api/v1/login.

The form is protected before any session exists by a signed double-submit token (radio/web/security.py):
``GET /login`` sets the pre-session cookie and writes the same token into the form, ``POST /login``
refuses a form without it. Logging out needs the session's CSRF token, which every page's menu sends.
"""

from __future__ import annotations

import secrets

from fastapi import Request
from fastapi.responses import Response

from radio import auth
from radio.settings import Settings
from radio.web.auth_api import client_address, start_session
from radio.web.deps import SessionDep, SettingsDep
from radio.web.pages.common import Form, error_page, page_router, redirect, render, safe_next
from radio.web.security import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    cross_site,
    issue_login_csrf,
    login_csrf_ok,
    login_csrf_token,
    read_session,
    session_csrf_ok,
)

router = page_router()
EXPIRED_VI = "Trang đăng nhập đã hết hạn hoặc không hợp lệ. Hãy nhập lại tên đăng nhập và mật khẩu."


def _form_page(request: Request, settings: Settings, context: dict[str, object], *, status_code: int = 200) -> Response:
    """The login form with this browser's pre-session token (reused while valid, else a new one)."""
    existing = login_csrf_token(request, settings)
    token = existing or secrets.token_urlsafe(24)
    response = render(request, "login.html", {"error": None, "username": "", "signed_in": False, **context,
                                              "login_csrf": token}, status_code=status_code)
    if existing is None:
        issue_login_csrf(response, settings, token)
    return response


@router.get("/login")
def login_form(request: Request, settings: SettingsDep, next: str = "/") -> Response:  # noqa: A002
    signed_in = read_session(request, settings) is not None
    return _form_page(request, settings, {"next": safe_next(next), "signed_in": signed_in})


@router.post("/login")
def login_submit(request: Request, form: Form, session: SessionDep, settings: SettingsDep) -> Response:
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))[:200]
    target = safe_next(str(form.get("next", "/")))
    if cross_site(request, settings) or not login_csrf_ok(request, settings, str(form.get("csrf_token", ""))):
        return _form_page(request, settings, {"next": target, "username": username, "error": EXPIRED_VI},
                          status_code=403)
    if not username or not password:
        return _form_page(request, settings, {"next": target, "username": username,
                                              "error": "Hãy nhập tên đăng nhập và mật khẩu."}, status_code=400)
    throttle: auth.LoginThrottle = request.app.state.login_throttle
    try:
        user = auth.login(session, throttle, username, password, client_address(request))
    except auth.LoginRefused as exc:
        session.commit()  # the failure is audited even though the login is refused
        return _form_page(request, settings, {"next": target, "username": username, "error": exc.reason},
                          status_code=429 if exc.throttled else 401)
    session.commit()
    response = redirect(target)
    start_session(response, settings, user)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")  # used up: the next login form gets a new token
    return response


@router.post("/logout")
async def logout(request: Request, settings: SettingsDep) -> Response:
    if not await session_csrf_ok(request, settings):
        return error_page(request, 403, "Phiên làm việc đã thay đổi. Hãy tải lại trang rồi thử lại.")
    response = redirect("/login", flash="Đã đăng xuất.")
    response.delete_cookie(COOKIE, path="/")
    return response
