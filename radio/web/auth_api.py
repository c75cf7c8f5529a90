"""Log in and out, API tokens, and user administration (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from radio import auth
from radio.auth import Principal
from radio.models import Role, User
from radio.web.deps import SessionDep, SettingsDep
from radio.web.security import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    READ,
    Admin,
    cookie_secure,
    cross_site,
    new_session,
    session_csrf_ok,
)

router = APIRouter(prefix="/api/v1", tags=["auth"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class Me(BaseModel):
    username: str
    role: str
    csrf_token: str | None = None


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TokenOut(BaseModel):
    token: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    password: str = Field(min_length=auth.MIN_PASSWORD, max_length=200)
    role: Role
    full_name: str = Field(default="", max_length=200)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    username: str
    full_name: str
    role: str
    disabled: bool


class PasswordIn(BaseModel):
    password: str = Field(min_length=auth.MIN_PASSWORD, max_length=200)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def start_session(response: Response, settings: SettingsDep, user: User) -> str:
    value, csrf = new_session(settings, user)
    response.set_cookie(COOKIE, value, max_age=int(settings.session_hours * 3600), httponly=True, samesite="lax",
                        secure=cookie_secure(settings), path="/")
    return csrf


def same_site_json(request: Request, settings: SettingsDep) -> None:
    """Login CSRF guard for the JSON login: a browser can post JSON cross-site only after a CORS preflight,
    which this app never grants; a request the browser marks as cross-site is refused outright."""
    if cross_site(request, settings):
        raise HTTPException(403, "đăng nhập từ trang web khác bị từ chối")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, "gửi tên đăng nhập và mật khẩu dạng JSON (Content-Type: application/json)")


@router.post("/login", response_model=Me, dependencies=[Depends(same_site_json)])
def login(body: LoginIn, request: Request, response: Response, session: SessionDep, settings: SettingsDep) -> Me:
    throttle: auth.LoginThrottle = request.app.state.login_throttle
    try:
        user = auth.login(session, throttle, body.username, body.password, client_address(request))
    except auth.LoginRefused as exc:
        session.commit()  # the failure is audited even though the login is refused
        raise HTTPException(429 if exc.throttled else 401, exc.reason) from None
    session.commit()
    return Me(username=user.username, role=user.role, csrf_token=start_session(response, settings, user))


@router.post("/logout", status_code=204)
async def logout(request: Request, settings: SettingsDep) -> Response:
    """End the browser session; with a session cookie the session's CSRF token must come in ``X-CSRF-Token``."""
    if not await session_csrf_ok(request, settings):
        raise HTTPException(403, "thiếu hoặc sai mã CSRF (tải lại trang rồi thử lại)")
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=Me)
def me(principal: Annotated[Principal, Depends(READ)], request: Request) -> Me:
    return Me(username=principal.username, role=principal.role, csrf_token=getattr(request.state, "csrf", None))


@router.post("/tokens", response_model=TokenOut, status_code=201)
def create_token(body: TokenIn, principal: Annotated[Principal, Depends(READ)], session: SessionDep) -> TokenOut:
    """A bearer token for the caller (shown once)."""
    user = session.get_one(User, principal.user_id)
    token = auth.create_token(session, user, body.name)
    session.commit()
    return TokenOut(token=token)


@router.get("/users", response_model=list[UserOut])
def list_users(_admin: Admin, session: SessionDep) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserIn, admin: Admin, session: SessionDep) -> User:
    user = auth.add_user(session, username=body.username, password=body.password, role=body.role,
                         full_name=body.full_name, actor=admin.username)
    session.commit()
    return user


@router.post("/users/{username}/password", status_code=204)
def change_password(username: str, body: PasswordIn, admin: Admin, session: SessionDep) -> Response:
    auth.set_password(session, username, body.password, actor=admin.username)
    session.commit()
    return Response(status_code=204)


@router.post("/users/{username}/disable", response_model=UserOut)
def disable_user(username: str, admin: Admin, session: SessionDep) -> User:
    if username == admin.username:
        raise HTTPException(409, "không thể tự khóa tài khoản của mình")
    auth.set_disabled(session, username, True, actor=admin.username)
    session.commit()
    return auth.get_user(session, username)
