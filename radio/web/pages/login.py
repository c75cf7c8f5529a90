"""Đăng nhập / đăng xuất with the same throttled login and session cookie as POST /api/v1/login."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from radio import auth
from radio.web.auth_api import client_address, start_session
from radio.web.deps import SessionDep, SettingsDep
from radio.web.pages.common import Form, page_router, redirect, render, safe_next
from radio.web.security import COOKIE, read_session

router = page_router()


@router.get("/login")
def login_form(request: Request, settings: SettingsDep, next: str = "/") -> Response:  # noqa: A002
    signed_in = read_session(request, settings) is not None
    return render(request, "login.html", {"next": safe_next(next), "error": None, "username": "",
                                          "signed_in": signed_in})


@router.post("/login")
def login_submit(request: Request, form: Form, session: SessionDep, settings: SettingsDep) -> Response:
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))[:200]
    target = safe_next(str(form.get("next", "/")))
    if not username or not password:
        return render(request, "login.html", {"next": target, "username": username, "signed_in": False,
                                              "error": "Hãy nhập tên đăng nhập và mật khẩu."}, status_code=400)
    throttle: auth.LoginThrottle = request.app.state.login_throttle
    try:
        user = auth.login(session, throttle, username, password, client_address(request))
    except auth.LoginRefused as exc:
        session.commit()  # the failure is audited even though the login is refused
        return render(request, "login.html", {"next": target, "username": username, "signed_in": False,
                                              "error": exc.reason}, status_code=429 if exc.throttled else 401)
    session.commit()
    response = redirect(target)
    start_session(response, settings, user)
    return response


@router.post("/logout")
def logout() -> Response:
    response = redirect("/login", flash="Đã đăng xuất.")
    response.delete_cookie(COOKIE, path="/")
    return response
