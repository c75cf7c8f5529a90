"""People and machines: users with roles, argon2id passwords, API tokens, login throttling.

Roles (docs/security.md has the full route matrix):
    admin      everything, including users
    officer    biên tập: writes bulletins, schedules slots, uploads audio
    approver   phê duyệt: approves content, triggers emergencies
    auditor    giám sát: reads logs, the audit trail and reports only
    node       machine accounts (loudspeaker nodes)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from radio.errors import Conflict, InvalidInput, NotFound
from radio.logbook import audit
from radio.models import ApiToken, Role, User, utcnow

log = logging.getLogger(__name__)
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
HUMAN_ROLES = (Role.ADMIN, Role.OFFICER, Role.APPROVER, Role.AUDITOR)
MIN_PASSWORD = 8
TOKEN_PREFIX = "rt_"


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The authenticated caller of a request."""

    user_id: int
    username: str
    role: Role
    via: str  # "session" | "token"


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"mật khẩu phải có ít nhất {MIN_PASSWORD} ký tự", where="password")
    if len(password) > 200:
        raise InvalidInput("mật khẩu quá dài (tối đa 200 ký tự)", where="password")
    return _hasher.hash(password)


def check_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash("not-a-real-password")


def _spend_time(password: str) -> bool:
    """Hash like a real check so an unknown user name cannot be told apart by timing."""
    try:
        _hasher.verify(_DUMMY_HASH, password)
    except VerificationError:
        pass
    return False


def add_user(session: Session, *, username: str, password: str, role: str, full_name: str = "",
             actor: str = audit.ACTOR_CLI) -> User:
    if role not in Role.__members__.values():
        raise InvalidInput(f"vai trò không hợp lệ {role!r}; chọn {', '.join(r.value for r in Role)}", where="role")
    if not username or len(username) > 64 or not all(c.isalnum() or c in "._-" for c in username):
        raise InvalidInput("tên đăng nhập chỉ gồm chữ, số, '.', '_', '-' (tối đa 64)", where="username")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"tài khoản «{username}» đã có")
    user = User(username=username, full_name=full_name, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    audit.record(session, actor=actor, action=audit.USER_CREATED, entity_type="user", entity_id=username,
                 before=None, after=_public(user))
    return user


def get_user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        raise NotFound("user", username)
    return user


def set_password(session: Session, username: str, password: str, *, actor: str = audit.ACTOR_CLI) -> None:
    user = get_user(session, username)
    user.password_hash = hash_password(password)
    user.session_epoch += 1  # every open web session of this user ends
    audit.record(session, actor=actor, action=audit.USER_UPDATED, entity_type="user", entity_id=username,
                 before=None, after={"password": "changed"})


def set_disabled(session: Session, username: str, disabled: bool, *, actor: str = audit.ACTOR_CLI) -> None:
    user = get_user(session, username)
    before = _public(user)
    user.disabled = disabled
    user.session_epoch += 1
    audit.record(session, actor=actor, action=audit.USER_UPDATED, entity_type="user", entity_id=username,
                 before=before, after=_public(user))


def _public(user: User) -> dict[str, object]:
    return {"username": user.username, "full_name": user.full_name, "role": user.role, "disabled": user.disabled}


# tokens ----------------------------------------------------------------------------------------------
def create_token(session: Session, user: User, name: str) -> str:
    """A new bearer token; returned once, only its sha256 is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name[:100], token_sha256=_sha256(token)))
    audit.record(session, actor=user.username, action="token.created", entity_type="user", entity_id=user.username,
                 before=None, after={"token": name[:100]})
    return token


TOKEN_TOUCH_S = 60.0  # last_used_at is written at most this often per token
TOUCH_WAIT_MS = 100  # how long that write may wait for a busy database before it is skipped
_touched: dict[str, float] = {}  # token hash → monotonic time of this process's last attempt
_touched_lock = threading.Lock()


def principal_for_token(session: Session, token: str) -> Principal | None:
    """The token's user; notes the use (``last_used_at``) at most once a minute, and only if that is cheap.

    The note is a write: on SQLite it needs the one write lock, which node events may hold for seconds.
    It is committed at once on the caller's session (call this before anything else in the request)
    and skipped when the database is busy, so a read never waits long for the lock nor fails on it.
    """
    row = session.scalars(select(ApiToken).where(ApiToken.token_sha256 == _sha256(token))).one_or_none()
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    principal = Principal(user_id=user.id, username=user.username, role=Role(user.role), via="token")
    now = utcnow()
    noted_lately = row.last_used_at is not None and now - row.last_used_at < dt.timedelta(seconds=TOKEN_TOUCH_S)
    if not noted_lately and _touch_due(row.token_sha256):  # the database: other processes; the memo: this one
        touch_token(session, row.id, now)
    return principal


def _touch_due(token_sha256: str) -> bool:
    """One attempt per token a minute in this process, whether it succeeded or found the database busy."""
    now = time.monotonic()
    with _touched_lock:
        if now - _touched.get(token_sha256, -TOKEN_TOUCH_S) < TOKEN_TOUCH_S:
            return False
        _touched[token_sha256] = now
        return True


def touch_token(session: Session, token_id: int, at: dt.datetime) -> bool:
    """Set a token's ``last_used_at`` and commit; False (rolled back, nothing raised) when the database is busy."""
    try:
        with _short_lock_wait(session):
            session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=at))
        session.commit()
        return True
    except OperationalError as exc:  # "database is locked", a lock timeout: the read goes on without the note
        session.rollback()
        log.info("token %s: last use not recorded (database busy: %s)", token_id, exc.orig)
        return False


@contextmanager
def _short_lock_wait(session: Session) -> Iterator[None]:
    """Wait at most TOUCH_WAIT_MS for a lock inside the block (SQLite: busy timeout; PostgreSQL: lock_timeout)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{TOUCH_WAIT_MS}ms'")  # until this transaction ends
        yield
    elif conn.dialect.name == "sqlite":
        usual = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {TOUCH_WAIT_MS}")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(usual)}")
    else:
        yield


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# login -----------------------------------------------------------------------------------------------
class LoginThrottle:
    """At most ``limit`` failures per username and per client address in ``window_s``; then refuse.

    Memory is bounded: only keys with a recent failure are kept (a lookup creates nothing), and at most
    ``max_keys`` of them, the least recently failed forgotten first, so a flood of made-up user names
    cannot grow the process. Addresses are kept apart from user names, so such a flood cannot push a
    throttled address out either.
    """

    def __init__(self, limit: int = 5, window_s: float = 300.0, max_keys: int = 10_000) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._failures: dict[str, OrderedDict[str, deque[float]]] = {"addr": OrderedDict(), "user": OrderedDict()}
        self._lock = threading.Lock()

    def _table(self, key: str) -> OrderedDict[str, deque[float]]:
        return self._failures["addr" if key.startswith("addr:") else "user"]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(t) for t in self._failures.values())

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                table = self._table(key)
                q = table.get(key)
                if q is None:
                    continue
                while q and now - q[0] > self.window_s:
                    q.popleft()
                if not q:
                    del table[key]
                elif len(q) >= self.limit:
                    return True
        return False

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                table = self._table(key)
                q = table.pop(key, None) or deque(maxlen=self.limit)
                q.append(now)
                table[key] = q  # the most recently failed last
                while len(table) > self.max_keys:
                    table.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._table(key).pop(key, None)


class LoginRefused(Exception):
    def __init__(self, reason: str, throttled: bool = False) -> None:
        self.reason, self.throttled = reason, throttled
        super().__init__(reason)


def login(session: Session, throttle: LoginThrottle, username: str, password: str, client: str) -> User:
    """Check a password login, throttled per user and per address; every failure is audited."""
    keys = (f"user:{username.lower()}", f"addr:{client}")
    if throttle.blocked(*keys):
        audit.record(session, actor=username[:100] or "?", action=audit.USER_LOGIN_FAILED, entity_type="user",
                     entity_id=username[:200], before=None, after={"reason": "throttled", "client": client})
        raise LoginRefused("Đăng nhập sai quá nhiều lần, hãy thử lại sau ít phút.", throttled=True)
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    ok = check_password(user, password) if user else _spend_time(password)
    if user is None or not ok or user.disabled or user.role == Role.NODE:
        throttle.failed(*keys)
        audit.record(session, actor=username[:100] or "?", action=audit.USER_LOGIN_FAILED, entity_type="user",
                     entity_id=username[:200], before=None,
                     after={"reason": "disabled" if user and user.disabled and ok else "bad credentials",
                            "client": client})
        raise LoginRefused("Tên đăng nhập hoặc mật khẩu không đúng.")
    throttle.succeeded(*keys)
    audit.record(session, actor=user.username, action="user.login", entity_type="user", entity_id=user.username,
                 before=None, after={"client": client})
    return user
