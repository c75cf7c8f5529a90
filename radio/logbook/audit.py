"""The audit trail: every change by a person or the system, appended to a hash chain.

Each :class:`AuditEntry` stores who (``actor``), when (``at``, UTC), what (``action``, ``entity_type``,
``entity_id``) and the entity's state ``before`` and ``after`` the change, plus ``prev_hash`` (the
previous entry's ``hash``) and its own ``hash``::

    hash = sha256(canonical JSON of {id, at, actor, action, entity_type, entity_id, before, after, prev_hash})

Canonical JSON: keys sorted, no spaces, UTF-8, ``at`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The first
entry's ``prev_hash`` is :data:`GENESIS` (64 zeros). Ids are assigned here, consecutively from 1, so
a deleted record shows as a gap as well as a broken link.

A single-row table :class:`AuditHead` (``audit_head``) holds the id and hash of the last entry. It is
updated in the same transaction as the append, so deleting the last records (tail truncation), which
leaves a perfectly valid shorter chain, is still caught: the head names a record that is gone.

Concurrency: appends are serialised so two writers never fork the chain.

* PostgreSQL: :func:`record` takes ``pg_advisory_xact_lock(AUDIT_LOCK)`` before reading the head; it is
  held until the caller's transaction commits or rolls back. Under READ COMMITTED (the default) the
  head read after the lock sees the previous writer's commit.
* SQLite: :func:`record` first issues a no-op ``UPDATE audit_head``, which takes SQLite's single write
  lock (what ``BEGIN IMMEDIATE`` would do) before the head is read; a second writer waits on the busy
  timeout (30 s, see :func:`radio.db.make_engine`) until the first commits.

The entry is written in the caller's transaction: if the change rolls back, so does its audit entry.

Limits, stated honestly: the chain proves that records were not changed *after the fact by someone
who did not also recompute the chain*. Anyone with write access to the database can rewrite every
hash and the head, and the result verifies. The defence is to keep the head outside the database:
each report prints it (``bản ghi #N, SHA-256 …``), ``radio audit head`` prints it for a file or a
paper register, and ``radio audit verify --anchor N:HASH`` checks that a head noted earlier is still
part of the chain. Database triggers (migration ``0002_audit``) refuse UPDATE and DELETE on
``audit_log`` (and TRUNCATE on PostgreSQL) and DELETE on ``audit_head``, against mistakes, not against
an owner who drops them.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Integer, String, func, select, text, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapped, Session, mapped_column

from radio.errors import InvalidInput
from radio.models import Base, utcnow

GENESIS = "0" * 64
AUDIT_LOCK = 0x7261646961756474  # pg_advisory_xact_lock key: "radiaudt" as a bigint
HEAD_ID = 1
ACTOR_SYSTEM = "system"
ACTOR_CLI = "cli"

# The action vocabulary ("<entity>.<verb>"); other modules may add their own in the same shape.
BULLETIN_CREATED, BULLETIN_UPDATED, BULLETIN_DELETED = "bulletin.created", "bulletin.updated", "bulletin.deleted"
BULLETIN_SUBMITTED, BULLETIN_APPROVED, BULLETIN_RETURNED = "bulletin.submitted", "bulletin.approved", "bulletin.returned"
SLOT_CREATED, SLOT_UPDATED, SLOT_DELETED = "slot.created", "slot.updated", "slot.deleted"
PROGRAMME_LOADED = "programme.loaded"
EMERGENCY_TRIGGERED = "emergency.triggered"
SETTINGS_CHANGED = "settings.changed"
USER_CREATED, USER_UPDATED, USER_DELETED = "user.created", "user.updated", "user.deleted"
USER_LOGIN_FAILED = "user.login_failed"

# Column sizes (checked in record(): PostgreSQL refuses longer values, SQLite would silently keep them).
_LIMITS = {"actor": 100, "action": 64, "entity_type": 64, "entity_id": 200}


class AuditEntry(Base):
    """One change, chained to the previous one by ``prev_hash``."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(_LIMITS["actor"]), index=True)
    action: Mapped[str] = mapped_column(String(_LIMITS["action"]), index=True)
    entity_type: Mapped[str] = mapped_column(String(_LIMITS["entity_type"]))
    entity_id: Mapped[str | None] = mapped_column(String(_LIMITS["entity_id"]))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The single row (id 1) naming the last entry: catches deleted tail records."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# hashing ---------------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """A JSON-safe copy: datetimes as ISO 8601 (UTC with Z), dates/times ISO, enums by value, bytes base64."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None  # JSON has no NaN/Infinity; the canonical form must round-trip
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [json_safe(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return str(value)


def canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _format_at(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compute_hash(*, id: int, at: dt.datetime, actor: str, action: str, entity_type: str, entity_id: str | None,
                 before: Any, after: Any, prev_hash: str) -> str:
    """The SHA-256 (hex) of an entry's canonical JSON; ``prev_hash`` is part of it, which makes the chain."""
    fields = {"id": id, "at": _format_at(at), "actor": actor, "action": action, "entity_type": entity_type,
              "entity_id": entity_id, "before": before, "after": after, "prev_hash": prev_hash}
    return hashlib.sha256(canonical(fields).encode("utf-8")).hexdigest()


def entry_hash(entry: Any) -> str:
    """Recompute a stored entry's hash from its columns (an AuditEntry or a row with the same names)."""
    return compute_hash(id=entry.id, at=entry.at, actor=entry.actor, action=entry.action,
                        entity_type=entry.entity_type, entity_id=entry.entity_id, before=entry.before,
                        after=entry.after, prev_hash=entry.prev_hash)


# writing ---------------------------------------------------------------------------------------------
def snapshot(obj: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An ORM row's column values as a JSON-safe dict (for ``before``/``after``), plus ``extra`` keys."""
    mapper = sa_inspect(obj).mapper
    data = {attr.key: json_safe(getattr(obj, attr.key)) for attr in mapper.column_attrs}
    if extra:
        data.update({str(k): json_safe(v) for k, v in extra.items()})
    return data


def _lock(session: Session) -> None:
    """Serialise appenders until the caller's transaction ends (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK})
    else:  # SQLite: a write statement takes the database's write lock now, before the head is read
        session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(last_id=AuditHead.last_id))


def _current_head(session: Session) -> tuple[AuditHead | None, int, str]:
    head = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if head is not None:
        return head, head.last_id, head.hash
    # No head row (a database built with create_all, or a deleted head): continue from the last entry.
    last = session.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    return None, (last.id if last else 0), (last.hash if last else GENESIS)


def record(session: Session, *, actor: str, action: str, entity_type: str, entity_id: object = None,
           before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
           at: dt.datetime | None = None) -> AuditEntry:
    """Append one entry in the caller's transaction and move the head; returns the flushed entry."""
    values = {"actor": actor, "action": action, "entity_type": entity_type,
              "entity_id": None if entity_id is None else str(entity_id)}
    for name, limit in _LIMITS.items():
        value = values[name]
        if name != "entity_id" and not value:
            raise ValueError(f"audit {name} must not be empty")
        if value is not None and len(value) > limit:
            raise ValueError(f"audit {name} longer than {limit} characters: {value[:40]!r}…")
    # What is hashed must be exactly what reads back from the JSON column.
    before_json = None if before is None else json.loads(canonical(json_safe(before)))
    after_json = None if after is None else json.loads(canonical(json_safe(after)))
    when = (at or utcnow()).astimezone(dt.UTC)
    _lock(session)
    head, last_id, last_hash = _current_head(session)
    entry = AuditEntry(id=last_id + 1, at=when, **values, before=before_json, after=after_json,
                       prev_hash=last_hash)
    entry.hash = entry_hash(entry)
    session.add(entry)
    if head is None:
        session.add(AuditHead(id=HEAD_ID, last_id=entry.id, hash=entry.hash, updated_at=when))
    else:
        head.last_id, head.hash, head.updated_at = entry.id, entry.hash, when
    session.flush()
    return entry


# reading ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Head:
    """The last entry's id and hash: the integrity reference printed on reports (0 and GENESIS when empty)."""

    last_id: int
    hash: str

    def __str__(self) -> str:
        return f"{self.last_id}:{self.hash}"


def head(session: Session) -> Head:
    row = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is not None:
        return Head(row.last_id, row.hash)
    last = session.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    return Head(last.id, last.hash) if last else Head(0, GENESIS)


def parse_anchor(value: str) -> tuple[int, str]:
    """``"17:ab12…"`` (as ``radio audit head`` prints it) → (17, "ab12…")."""
    ident, sep, digest = value.strip().partition(":")
    digest = digest.strip().lower()
    if not sep or not ident.strip().isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput(f"mốc kiểm tra không hợp lệ {value!r}: cần dạng SỐ:SHA256 (64 ký tự hex)", where="anchor")
    return int(ident), digest


def entries(session: Session, *, limit: int = 50, offset: int = 0, action: str | None = None,
            entity_type: str | None = None, entity_id: str | None = None, actor: str | None = None,
            since: dt.datetime | None = None, until: dt.datetime | None = None,
            newest_first: bool = True) -> tuple[int, list[AuditEntry]]:
    """A page of entries (and the total matching), newest first by default."""
    query = select(AuditEntry)
    if action:
        query = query.where(AuditEntry.action == action)
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if entity_id:
        query = query.where(AuditEntry.entity_id == entity_id)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if since:
        query = query.where(AuditEntry.at >= since)
    if until:
        query = query.where(AuditEntry.at < until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = AuditEntry.id.desc() if newest_first else AuditEntry.id.asc()
    rows = list(session.scalars(query.order_by(order).limit(limit).offset(offset)))
    return total, rows


# verifying -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyResult:
    """``ok`` with the number of entries checked, or the first broken record and why."""

    ok: bool
    count: int
    first_broken_id: int | None = None
    reason: str | None = None  # English, stable wording (tests, logs)
    reason_vi: str | None = None  # for officers
    head: Head | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "first_broken_id": self.first_broken_id, "reason": self.reason,
                "reason_vi": self.reason_vi, "head_id": self.head.last_id if self.head else None,
                "head_hash": self.head.hash if self.head else None}


def _broken(count: int, ident: int | None, reason: str, reason_vi: str, head_: Head | None) -> VerifyResult:
    return VerifyResult(False, count, ident, reason, reason_vi, head_)


def verify(session: Session, anchors: Iterable[tuple[int, str]] = (), batch: int = 1000) -> VerifyResult:
    """Walk the chain in id order; report the first record that is missing, modified or relinked.

    Checks, in order, for each record: its id follows the previous one (a gap = deleted records);
    its stored hash matches its content (modified in place); its ``prev_hash`` matches the previous
    record's hash (the previous record was rewritten with a recomputed hash, or records were
    re-inserted). Then the head: it must name the last record and its hash (tail deleted, or rows
    appended around :func:`record`). ``anchors`` — (id, hash) pairs noted earlier outside the database —
    must still be in the chain (a wholesale rewrite).
    """
    head_row = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    head0 = Head(head_row.last_id, head_row.hash) if head_row else None
    wanted = {ident: digest for ident, digest in anchors}
    count = 0
    prev_id, prev_hash = 0, GENESIS
    hash_at_head0: str | None = None
    # Plain rows, not ORM objects: nothing lands in the caller's identity map, memory stays flat.
    query = select(*AuditEntry.__table__.c).order_by(AuditEntry.id).execution_options(yield_per=batch)
    result = session.execute(query)
    try:
        for entry in result:
            expected = prev_id + 1
            if entry.id != expected:
                if entry.id < expected:  # ids are a primary key, so only a negative/zero id gets here
                    return _broken(count, entry.id, f"record {entry.id} is out of sequence (after record {prev_id})",
                                   f"bản ghi {entry.id} sai thứ tự (sau bản ghi {prev_id})", head0)
                missing = f"{expected}" if entry.id == expected + 1 else f"{expected}–{entry.id - 1}"
                if prev_id == 0:
                    return _broken(count, expected, f"record {missing} is missing (chain starts at {entry.id})",
                                   f"mất bản ghi {missing} (chuỗi bắt đầu từ bản ghi {entry.id})", head0)
                return _broken(count, expected,
                               f"record {missing} is missing (chain jumps from {prev_id} to {entry.id})",
                               f"mất bản ghi {missing} (chuỗi nhảy từ bản ghi {prev_id} sang {entry.id})", head0)
            if entry_hash(entry) != entry.hash:
                return _broken(count, entry.id, f"record {entry.id} was modified (its content does not match its hash)",
                               f"bản ghi {entry.id} đã bị sửa (nội dung không khớp mã băm)", head0)
            if entry.prev_hash != prev_hash:
                if prev_id == 0:
                    return _broken(count, entry.id, f"record {entry.id}'s previous-hash does not match the chain start",
                                   f"mã băm trước của bản ghi {entry.id} không khớp điểm đầu chuỗi", head0)
                return _broken(count, prev_id,
                               f"record {entry.id}'s previous-hash does not match record {prev_id} "
                               f"(record {prev_id} was rewritten)",
                               f"mã băm trước của bản ghi {entry.id} không khớp bản ghi {prev_id} "
                               f"(bản ghi {prev_id} đã bị viết lại)", head0)
            if entry.id in wanted and wanted[entry.id] != entry.hash:
                return _broken(count, entry.id, f"record {entry.id} does not match the checkpoint noted earlier "
                               "(the chain was rewritten)",
                               f"bản ghi {entry.id} không khớp mốc kiểm tra đã lưu (chuỗi đã bị viết lại)", head0)
            if head0 is not None and entry.id == head0.last_id:
                hash_at_head0 = entry.hash
            count += 1
            prev_id, prev_hash = entry.id, entry.hash
    finally:
        result.close()

    for ident in sorted(wanted):
        if ident > prev_id:
            return _broken(count, ident, f"record {ident} named by a checkpoint is missing (the log ends at {prev_id})",
                           f"mất bản ghi {ident} có trong mốc kiểm tra (nhật ký chỉ đến bản ghi {prev_id})", head0)
    if head0 is None:
        if count:
            return _broken(count, None, "the chain head (audit_head) is missing",
                           "mất bản ghi đầu chuỗi (audit_head)", None)
        return VerifyResult(True, 0, head=Head(0, GENESIS))
    if head0.last_id > prev_id:
        missing = f"{prev_id + 1}" if head0.last_id == prev_id + 1 else f"{prev_id + 1}–{head0.last_id}"
        return _broken(count, prev_id + 1,
                       f"record {missing} is missing (the log ends at {prev_id} but its head names {head0.last_id})",
                       f"mất bản ghi {missing} (nhật ký chỉ đến bản ghi {prev_id} nhưng đầu chuỗi ghi "
                       f"{head0.last_id})", head0)
    if head0.last_id and hash_at_head0 != head0.hash:
        return _broken(count, head0.last_id,
                       f"record {head0.last_id} was rewritten (it does not match the chain head)",
                       f"bản ghi {head0.last_id} đã bị viết lại (không khớp đầu chuỗi)", head0)
    if prev_id > head0.last_id:
        # Entries appended while we read are covered by the head as it is now; others bypassed record().
        now_head = head(session)
        if now_head.last_id < prev_id:
            return _broken(count, now_head.last_id + 1,
                           f"record {now_head.last_id + 1} is not covered by the chain head "
                           "(appended outside the audit writer)",
                           f"bản ghi {now_head.last_id + 1} nằm ngoài đầu chuỗi (được thêm không qua bộ ghi nhật ký)",
                           now_head)
        return VerifyResult(True, count, head=now_head)
    return VerifyResult(True, count, head=head0)


def describe(entry: AuditEntry, tz: dt.tzinfo) -> str:
    """One line for the console: local time, actor, action, entity and the changed fields."""
    changed = changed_fields(entry.before, entry.after)
    what = f"{entry.entity_type}:{entry.entity_id}" if entry.entity_id else entry.entity_type
    tail = f" [{', '.join(changed)}]" if changed else ""
    return f"#{entry.id:<6} {entry.at.astimezone(tz):%d/%m/%Y %H:%M:%S}  {entry.actor:<12} {entry.action:<22} {what}{tail}"


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> Sequence[str]:
    """The keys whose value differs between ``before`` and ``after`` (sorted)."""
    if before is None or after is None:
        return []
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
