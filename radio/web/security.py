"""Who is calling, and may they: bearer tokens or a signed session cookie, role checks, CSRF.

- API clients send ``Authorization: Bearer rt_…`` (tokens from ``POST /api/v1/tokens`` or ``radio user token``).
- Browsers log in (``POST /api/v1/login`` or the login page) and get an HttpOnly, SameSite=Lax cookie,
  signed and time-limited, tied to the user's session epoch (a password change or disable ends it).
- Every unsafe request authenticated by cookie must carry the session's CSRF token, in the
  ``X-CSRF-Token`` header or a ``csrf_token`` form field; bearer-token requests are not exposed to CSRF.
- Before there is a session, the login form is protected by a signed double-submit token: ``GET /login``
  sets the ``radio_login_csrf`` cookie and puts the same token in the form; ``POST /login`` refuses a
  form whose token does not match its cookie (login CSRF: signing a victim in as the attacker).
  Logging out needs the session's token too. Both login routes refuse a request a browser marks as
  cross-site (``Origin`` of another site, ``Sec-Fetch-Site: cross-site``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from radio.auth import Principal, principal_for_token
from radio.models import Role, User
from radio.settings import Settings
from radio.web.deps import get_session

COOKIE = "radio_session"
LOGIN_CSRF_COOKIE = "radio_login_csrf"
LOGIN_CSRF_HOURS = 12  # how long a login form stays usable
CSRF_HEADER = "X-CSRF-Token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def secret_key(settings: Settings) -> str:
    """The configured secret, or one generated once into the data directory (mode 0600)."""
    if settings.secret_key:
        return settings.secret_key
    path: Path = settings.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(settings), salt="radio-session")


def new_session(settings: Settings, user: User) -> tuple[str, str]:
    """A cookie value for ``user`` and its CSRF token."""
    csrf = secrets.token_urlsafe(24)
    return serializer(settings).dumps({"uid": user.id, "epoch": user.session_epoch, "csrf": csrf}), csrf


def read_session(request: Request, settings: Settings) -> dict[str, Any] | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = serializer(settings).loads(raw, max_age=int(settings.session_hours * 3600))
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None


def cookie_secure(settings: Settings) -> bool:
    """Cookies get the ``Secure`` flag when the console is served over https (``public_base_url``)."""
    return bool(settings.public_base_url and settings.public_base_url.startswith("https://"))


# CSRF before a session exists (the login form) --------------------------------------------------------
def _login_serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(settings), salt="radio-login-csrf")


def login_csrf_token(request: Request, settings: Settings) -> str | None:
    """The token of this browser's pre-session cookie, if it carries a valid one."""
    raw = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not raw:
        return None
    try:
        token = _login_serializer(settings).loads(raw, max_age=LOGIN_CSRF_HOURS * 3600)
    except BadSignature:
        return None
    return token if isinstance(token, str) and token else None


def issue_login_csrf(response: Response, settings: Settings, token: str) -> None:
    """Set the pre-session cookie carrying ``token`` (HttpOnly, SameSite=Lax, Secure over https)."""
    response.set_cookie(LOGIN_CSRF_COOKIE, _login_serializer(settings).dumps(token), max_age=LOGIN_CSRF_HOURS * 3600,
                        httponly=True, samesite="lax", secure=cookie_secure(settings), path="/")


def login_csrf_ok(request: Request, settings: Settings, sent: str | None) -> bool:
    """The form's token matches the browser's signed pre-session cookie (double submit)."""
    expected = login_csrf_token(request, settings)
    return bool(expected) and secrets.compare_digest(sent or "", expected or "")


def cross_site(request: Request, settings: Settings) -> bool:
    """A browser says this request comes from another site (the ``Sec-Fetch-Site`` or ``Origin`` header).

    Hosts are compared without the scheme: behind a TLS proxy the browser's origin is https and the request
    the app sees is http. ``Origin: null`` (privacy settings, a ``no-referrer`` policy) says nothing either
    way; the login form's token and JSON-only API login still stand.
    """
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin", "")
    if not origin or origin == "null":
        return False
    ours = {request.headers.get("host", "").lower()}
    if settings.public_base_url:
        ours.add(urlsplit(settings.public_base_url).netloc.lower())
    return urlsplit(origin).netloc.lower() not in ours


async def session_csrf_ok(request: Request, settings: Settings) -> bool:
    """For logout: no valid session (nothing to end) or the session's own token was sent (header or form)."""
    data = read_session(request, settings)
    return data is None or await _csrf_ok(request, str(data.get("csrf", "")))


async def current_principal(request: Request, session: Annotated[Session, Depends(get_session)]) -> Principal | None:
    """The caller, or None; also enforces CSRF on cookie-authenticated unsafe requests."""
    if hasattr(request.state, "principal"):
        return cast(Principal | None, request.state.principal)
    settings: Settings = request.app.state.service.settings
    principal: Principal | None = None
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        principal = principal_for_token(session, auth[7:].strip())  # first: it may commit the session
    else:
        data = read_session(request, settings)
        if data is not None:
            user = session.get(User, data.get("uid"))
            if user is not None and not user.disabled and user.session_epoch == data.get("epoch"):
                principal = Principal(user_id=user.id, username=user.username, role=Role(user.role), via="session")
                if request.method in UNSAFE and not await _csrf_ok(request, str(data.get("csrf", ""))):
                    raise HTTPException(403, "thiếu hoặc sai mã CSRF (tải lại trang rồi thử lại)")
            request.state.csrf = data.get("csrf")
    request.state.principal = principal
    return principal


async def _csrf_ok(request: Request, expected: str) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = str((await request.form()).get("csrf_token", ""))
    return bool(expected) and secrets.compare_digest(sent or "", expected)


def require(*roles: Role) -> Callable[..., Any]:
    """A dependency allowing only ``roles``: 401 without credentials, 403 with the wrong role."""
    allowed = frozenset(roles)

    async def dependency(principal: Annotated[Principal | None, Depends(current_principal)]) -> Principal:
        if principal is None:
            raise HTTPException(401, "cần đăng nhập", headers={"WWW-Authenticate": "Bearer"})
        if principal.role not in allowed:
            raise HTTPException(403, f"vai trò {principal.role.value} không được phép làm việc này")
        return principal

    dependency.allowed = allowed  # type: ignore[attr-defined]  # read by the route-matrix test and docs
    return dependency


# The policy, in one place (docs/security.md shows it as a table).
READ = require(Role.ADMIN, Role.OFFICER, Role.APPROVER, Role.AUDITOR)
EDIT = require(Role.ADMIN, Role.OFFICER)
APPROVE = require(Role.ADMIN, Role.APPROVER)
PREVIEW = require(Role.ADMIN, Role.OFFICER, Role.APPROVER)
LOGS = require(Role.ADMIN, Role.AUDITOR, Role.OFFICER, Role.APPROVER)
AUDIT = require(Role.ADMIN, Role.AUDITOR)
ADMIN = require(Role.ADMIN)

Reader = Annotated[Principal, Depends(READ)]
Editor = Annotated[Principal, Depends(EDIT)]
Approver = Annotated[Principal, Depends(APPROVE)]
Admin = Annotated[Principal, Depends(ADMIN)]
