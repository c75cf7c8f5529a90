"""The database tables: the single source of truth for the programme and what aired.

zones ─< nodes            a TDP and its loudspeaker clusters
segments ─< bulletins     chuyên mục and their text (or uploaded audio)
slots ─< slot_items       a recurring programme slot and its ordered playlist
      ─< slot_targets     the zones it plays on (none = the whole ward)
broadcasts ─< deliveries  one occurrence of a slot (or an emergency) and each node's outcome
commands                  the outbox: every MQTT command stored before it is published

All instants are stored in UTC (naive in SQLite, converted back to aware UTC on load).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    Time,
    TypeDecorator,
    UniqueConstraint,
    event,
    select,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores aware datetimes as naive UTC; always returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC datetimes")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Priority(enum.StrEnum):
    """Thông tư 39/2020/TT-BTTTT: thông thường, ưu tiên, khẩn cấp."""

    NORMAL = "normal"
    PRIORITY = "priority"
    EMERGENCY = "emergency"


class BulletinStatus(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"


class BroadcastStatus(enum.StrEnum):
    PREPARING = "preparing"
    ON_AIR = "on_air"
    COMPLETED = "completed"  # every targeted node finished
    PARTIAL = "partial"  # some nodes finished, some did not
    FAILED = "failed"  # no node finished, or audio could not be made
    NOT_AIRED = "not_aired"  # refused before sending (content not approved, no nodes)
    MISSED = "missed"  # the service was down past the grace period


class DeliveryState(enum.StrEnum):
    ISSUED = "issued"
    RECEIVED = "received"
    READY = "ready"
    PLAYING = "playing"
    FINISHED = "finished"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    MISSED = "missed"

    @property
    def final(self) -> bool:
        return self in FINAL_DELIVERY_STATES


FINAL_DELIVERY_STATES = frozenset(
    {DeliveryState.FINISHED, DeliveryState.FAILED, DeliveryState.REJECTED, DeliveryState.EXPIRED,
     DeliveryState.MISSED}
)


class Zone(Base):
    __tablename__ = "zones"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    nodes: Mapped[list[Node]] = relationship(back_populates="zone", order_by="Node.id")


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    session: Mapped[int] = mapped_column(BigInteger, default=0)  # boot counter from the node's state
    last_seen_at: Mapped[dt.datetime | None]
    zone: Mapped[Zone] = relationship(back_populates="nodes")
    # From the node's heartbeat (docs/protocol.md); silent_since is set when it stops talking while online.
    volume: Mapped[int | None] = mapped_column(Integer)
    playing_command_id: Mapped[str | None] = mapped_column(String(64))
    link_rtt_ms: Mapped[float | None] = mapped_column(Float)
    link_rssi_dbm: Mapped[int | None] = mapped_column(Integer)
    clock_offset_ms: Mapped[float | None] = mapped_column(Float)
    player: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[dt.datetime | None]
    silent_since: Mapped[dt.datetime | None]


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Bulletin(Base):
    __tablename__ = "bulletins"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[str | None] = mapped_column(ForeignKey("segments.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    text: Mapped[str | None] = mapped_column(Text)
    audio_sha256: Mapped[str | None] = mapped_column(String(64))  # an uploaded recording instead of text
    status: Mapped[str] = mapped_column(String(16), default=BulletinStatus.DRAFT)
    engine: Mapped[str | None] = mapped_column(String(32))
    voice: Mapped[str | None] = mapped_column(String(64))
    rate: Mapped[int | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[dt.datetime | None]
    approved_by: Mapped[str | None] = mapped_column(String(100))
    approved_at: Mapped[dt.datetime | None]
    review_comment: Mapped[str | None] = mapped_column(Text)  # why the approver returned it


class Slot(Base):
    """A recurring programme slot; recurrence fields follow iCalendar RRULE semantics."""

    __tablename__ = "slots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    segment_id: Mapped[str | None] = mapped_column(ForeignKey("segments.id"), index=True)
    start_time: Mapped[dt.time] = mapped_column(Time)  # wall-clock time in the site's zone
    weekdays: Mapped[str] = mapped_column(String(40), default="")  # "mon,wed,fri"; empty = every day
    interval_weeks: Mapped[int] = mapped_column(Integer, default=1)
    dates: Mapped[list[Any]] = mapped_column(default=list)  # ISO dates: one-off occurrences
    exclude_dates: Mapped[list[Any]] = mapped_column(default=list)
    valid_from: Mapped[dt.date | None]
    valid_until: Mapped[dt.date | None]
    holidays: Mapped[str] = mapped_column(String(8), default="keep")  # keep | skip
    priority: Mapped[str] = mapped_column(String(16), default=Priority.NORMAL)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    duration_s: Mapped[float | None] = mapped_column(Float)  # planned length; None = estimated from content
    items: Mapped[list[SlotItem]] = relationship(
        order_by="SlotItem.position", cascade="all, delete-orphan", back_populates="slot"
    )
    targets: Mapped[list[SlotTarget]] = relationship(cascade="all, delete-orphan", back_populates="slot")
    group_targets: Mapped[list[SlotGroupTarget]] = relationship(cascade="all, delete-orphan")

    @property
    def zone_ids(self) -> list[str]:
        return sorted(t.zone_id for t in self.targets)

    @property
    def group_ids(self) -> list[str]:
        return sorted(t.group_id for t in self.group_targets)

    @property
    def whole_ward(self) -> bool:
        return not self.targets and not self.group_targets


class ItemKind(enum.StrEnum):
    BULLETIN = "bulletin"  # a bulletin: its text spoken, or its uploaded recording
    AUDIO = "audio"  # an uploaded audio asset (jingle, recorded announcement, music)
    RELAY = "relay"  # a live stream relayed for a set duration (tiếp âm Đài thành phố)


class SlotItem(Base):
    """One entry of a slot's ordered playlist; exactly one of bulletin / asset / relay is set."""

    __tablename__ = "slot_items"

    slot_id: Mapped[str] = mapped_column(ForeignKey("slots.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default=ItemKind.BULLETIN)
    bulletin_id: Mapped[str | None] = mapped_column(ForeignKey("bulletins.id"), index=True)
    asset_id: Mapped[str | None] = mapped_column(ForeignKey("audio_assets.id"), index=True)
    relay_url: Mapped[str | None] = mapped_column(String(2000))
    relay_s: Mapped[float | None] = mapped_column(Float)
    slot: Mapped[Slot] = relationship(back_populates="items")
    bulletin: Mapped[Bulletin | None] = relationship()
    asset: Mapped[AudioAsset | None] = relationship()


class AudioAsset(Base):
    """An uploaded audio file (accepted by content), stored content-addressed."""

    __tablename__ = "audio_assets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    duration_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class NodeGroup(Base):
    """A named group of loudspeaker clusters across zones (e.g. "loa chợ", "loa trường học")."""

    __tablename__ = "node_groups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    members: Mapped[list[NodeGroupMember]] = relationship(cascade="all, delete-orphan")

    @property
    def node_ids(self) -> list[str]:
        return sorted(m.node_id for m in self.members)


class NodeGroupMember(Base):
    __tablename__ = "node_group_members"

    group_id: Mapped[str] = mapped_column(ForeignKey("node_groups.id", ondelete="CASCADE"), primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)


class SlotGroupTarget(Base):
    __tablename__ = "slot_group_targets"

    slot_id: Mapped[str] = mapped_column(ForeignKey("slots.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("node_groups.id"), primary_key=True)


class SlotTarget(Base):
    __tablename__ = "slot_targets"

    slot_id: Mapped[str] = mapped_column(ForeignKey("slots.id", ondelete="CASCADE"), primary_key=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"), primary_key=True)
    slot: Mapped[Slot] = relationship(back_populates="targets")


class Broadcast(Base):
    """One occurrence; ``occurrence_key`` is unique so nothing ever airs twice."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurrence_key: Mapped[str] = mapped_column(String(200), unique=True)
    # No foreign key: a slot deleted later keeps its past broadcasts linked to it (docs/audit.md, *Stable history*).
    slot_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # What the occurrence was when it fired, so later edits of the slot do not rewrite past reports:
    # its segment (chuyên mục) and whom it was for ({"zones": [...], "groups": [...], "reach": [zones]}).
    segment_id: Mapped[str | None] = mapped_column(String(64), index=True)
    targets: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    kind: Mapped[str] = mapped_column(String(16))  # scheduled | emergency | manual | demo
    priority: Mapped[str] = mapped_column(String(16), default=Priority.NORMAL)
    title: Mapped[str] = mapped_column(String(300))
    text: Mapped[str | None] = mapped_column(Text)  # what was spoken, kept as evidence
    scheduled_at: Mapped[dt.datetime] = mapped_column(index=True)
    fired_at: Mapped[dt.datetime | None]
    start_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16), default=BroadcastStatus.PREPARING)
    reason: Mapped[str | None] = mapped_column(Text)
    audio_sha256: Mapped[str | None] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)
    engine: Mapped[str | None] = mapped_column(String(32))
    valid_until: Mapped[dt.datetime | None]
    external_id: Mapped[str | None] = mapped_column(String(300), index=True)  # e.g. a CAP alert identifier
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="broadcast", order_by="Delivery.node_id", cascade="all, delete-orphan"
    )


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("broadcast_id", "node_id", "part", name="uq_deliveries_part"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    part: Mapped[int] = mapped_column(Integer, default=0)  # playlist part: recorded audio, then each relay
    command_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.ISSUED)
    reason: Mapped[str | None] = mapped_column(Text)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    received_at: Mapped[dt.datetime | None]
    ready_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    played_s: Mapped[float | None] = mapped_column(Float)
    broadcast: Mapped[Broadcast] = relationship(back_populates="deliveries")


class Command(Base):
    """Outbox row: stored before publishing, so a crash between the two loses nothing."""

    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"), index=True)
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    valid_until: Mapped[dt.datetime] = mapped_column(index=True)  # the outbox looks at recently expired ones each tick
    published_at: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Alert(Base):
    """Something an officer must see: content not approved at air time, a failed slot, a silent node."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="SET NULL"))
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)


class ServiceMark(Base):
    """Small key/value facts the service keeps, e.g. when the scheduler last ran (to record misses)."""

    __tablename__ = "service_marks"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[dt.datetime]


class Role(enum.StrEnum):
    """Who may do what: see docs/security.md for the whole matrix."""

    ADMIN = "admin"
    OFFICER = "officer"  # biên tập: writes and schedules
    APPROVER = "approver"  # phê duyệt: approves content, triggers emergencies
    AUDITOR = "auditor"  # giám sát: reads logs and reports only
    NODE = "node"  # machine accounts


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(300))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)  # bumped on password change: old cookies die
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token for the API; only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]


class NodeCredential(Base):
    """A node's MQTT password, as a Mosquitto-compatible PBKDF2-SHA512 hash (never the password)."""

    __tablename__ = "node_credentials"

    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def targets_snapshot(conn: Connection, zone_ids: Iterable[str], group_ids: Iterable[str]) -> dict[str, Any]:
    """Whom a broadcast is for, as stored on it: its zones, its groups, and every zone they reach."""
    zones, groups = sorted(zone_ids), sorted(group_ids)
    reach = set(zones)
    if groups:
        members, nodes = NodeGroupMember.__table__.c, Node.__table__.c
        reach |= set(conn.scalars(select(nodes.zone_id).where(
            nodes.id.in_(select(members.node_id).where(members.group_id.in_(groups))))))
    return {"zones": zones, "groups": groups, "reach": sorted(reach)}


def slot_snapshot(conn: Connection, slot_id: str) -> tuple[str | None, dict[str, Any] | None]:
    """(segment, targets) of a slot as stored now, read with Core on ``conn``; (None, None) if it is gone."""
    slots, targets, groups = Slot.__table__.c, SlotTarget.__table__.c, SlotGroupTarget.__table__.c
    found = conn.execute(select(slots.segment_id).where(slots.id == slot_id)).first()
    if found is None:
        return None, None
    return found[0], targets_snapshot(conn, conn.scalars(select(targets.zone_id).where(targets.slot_id == slot_id)),
                                      conn.scalars(select(groups.group_id).where(groups.slot_id == slot_id)))


@event.listens_for(Broadcast, "before_insert")
def _snapshot_slot(_mapper: Any, conn: Connection, target: Broadcast) -> None:
    """Every broadcast of a slot (aired, or recorded missed by any code path) stores the slot as it was."""
    if target.slot_id and (target.segment_id is None or target.targets is None):
        segment_id, targets = slot_snapshot(conn, target.slot_id)
        if target.segment_id is None:
            target.segment_id = segment_id
        if target.targets is None:
            target.targets = targets
