"""The as-run log and the scheduled-versus-aired reconciliation.

As-run: one :class:`BroadcastRow` per broadcast with one :class:`DeliveryRow` per loudspeaker cluster
(node): scheduled instant, command issued and published, received, ready, started (the node's own
clock), finished with the seconds it actually played — or failed / rejected / expired / missed with
the reason. Filters: period (whole local days), zone (TDP), segment (chuyên mục), priority, outcome;
paging with ``limit``/``offset`` and the ``total``.

Coverage of a broadcast = clusters that played it fully / clusters it was sent to. A delivery counts
as *played fully* when the node reported ``finished``, its reason does not say it was preempted, and
the seconds it reports playing reach the audio's duration within max(1 s, 2 %).

Reconciliation: every stored broadcast of the period as it was when it fired (a scheduled one is a planned
occurrence; emergencies, manual and demo broadcasts are listed with ``planned = False``), plus the
occurrences of the enabled slots (expanded with :func:`radio.schedule.recurrence.occurrences`) that have no
row, from each slot's last change on; each classified as one :class:`Category`, filtered by zone, segment,
priority and outcome, and paged. Past periods do not change when slots do (:func:`record_unaired`,
docs/audit.md *Stable history*).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Row, Select, and_, exists, func, null, or_, select
from sqlalchemy.orm import Session, selectinload

from radio.broadcast import occurrence_key
from radio.errors import InvalidInput
from radio.logbook.labels import BROADCAST_VI, DELIVERY_VI
from radio.models import (
    Broadcast,
    BroadcastStatus,
    Command,
    Delivery,
    DeliveryState,
    Node,
    NodeGroupMember,
    Priority,
    Segment,
    Slot,
    SlotGroupTarget,
    SlotTarget,
    Zone,
    utcnow,
)
from radio.schedule.recurrence import SlotRule, occurrences

PREEMPTED = "preempted by emergency"  # the reason a node gives when an emergency stops what it was playing
_PREEMPTED_WORD = "preempted"
_APPROVAL_WORDS = ("phê duyệt", "approv")
MAX_DAYS = 3700  # about ten years: a longer period is a typo
MAX_LIMIT = 1000
MIN_YEAR, MAX_YEAR = 2000, 2100  # a report's dates; beyond them datetime arithmetic overflows (year 1 or 9999)
MAX_RECON_LIMIT = 10_000


# periods ---------------------------------------------------------------------------------------------
def parse_date(value: str | dt.date, name: str = "ngày") -> dt.date:
    """``2024-09-15`` or ``15/09/2024`` → a date in years 2000–2100; anything else → InvalidInput in Vietnamese."""
    if isinstance(value, dt.date):
        return _in_range(value, name)
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y"):
        try:
            return _in_range(dt.datetime.strptime(text, fmt).date(), name)
        except ValueError:
            continue
    raise InvalidInput(f"ngày không hợp lệ {text!r} (dùng dạng 2024-09-15 hoặc 15/09/2024)", where=name)


def _in_range(day: dt.date, name: str) -> dt.date:
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise InvalidInput(f"ngày {day:%d/%m/%Y} nằm ngoài khoảng cho phép (năm {MIN_YEAR} đến năm {MAX_YEAR})",
                           where=name)
    return day


@dataclass(frozen=True)
class Period:
    """Whole local days ``first``..``last`` (both included) in the site's zone.

    As instants it is the half-open interval ``[first 00:00, last + 1 day 00:00)`` local time, so a
    report "từ ngày 01/01/2024 đến ngày 15/09/2024" includes everything aired on 15 September.
    """

    first: dt.date
    last: dt.date
    tz: dt.tzinfo

    def __post_init__(self) -> None:
        _in_range(self.first, "from")
        _in_range(self.last, "to")
        if self.last < self.first:
            raise InvalidInput(f"ngày kết thúc {self.last:%d/%m/%Y} trước ngày bắt đầu {self.first:%d/%m/%Y}",
                               where="--to")
        if (self.last - self.first).days > MAX_DAYS:
            raise InvalidInput(f"khoảng thời gian quá dài (tối đa {MAX_DAYS} ngày)", where="--to")

    @classmethod
    def parse(cls, first: str | dt.date, last: str | dt.date, tz: dt.tzinfo) -> Period:
        return cls(parse_date(first, "from"), parse_date(last, "to"), tz)

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time(), tzinfo=self.tz).astimezone(dt.UTC)

    @property
    def end(self) -> dt.datetime:
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), tzinfo=self.tz).astimezone(dt.UTC)

    @property
    def label_vi(self) -> str:
        return f"Từ ngày {self.first:%d/%m/%Y} đến ngày {self.last:%d/%m/%Y}"

    def as_dict(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat(), "timezone": str(self.tz)}


# as-run rows -----------------------------------------------------------------------------------------
@dataclass
class DeliveryRow:
    node_id: str
    node_name: str
    zone_id: str
    zone_name: str
    part: int  # playlist part: 0 = the recorded audio, then each relay
    state: str
    state_vi: str
    reason: str | None
    command_id: str
    issued_at: dt.datetime
    published_at: dt.datetime | None
    received_at: dt.datetime | None
    ready_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    played_s: float | None
    expected_s: float | None  # the part's length, from its command
    played_fully: bool
    preempted: bool


@dataclass
class BroadcastRow:
    id: int
    occurrence_key: str
    slot_id: str | None
    segment_id: str | None
    segment_name: str | None
    kind: str
    priority: str
    title: str
    scheduled_at: dt.datetime
    fired_at: dt.datetime | None
    start_at: dt.datetime | None
    completed_at: dt.datetime | None
    status: str
    status_vi: str
    reason: str | None
    duration_s: float | None
    targeted: int  # clusters it was sent to
    played_fully: int  # clusters that played every part fully
    coverage: float | None  # played_fully / targeted; None when it was never sent to any cluster
    airtime_s: float  # the longest time one (shown) cluster played it
    preempted: bool
    deliveries: list[DeliveryRow] = field(default_factory=list)
    text: str | None = None
    targets: dict[str, Any] | None = None  # whom the slot was for when it fired (zones, groups, reach)


@dataclass
class Page:
    total: int
    limit: int
    offset: int
    items: list[BroadcastRow]


def aired_s(d: DeliveryRow) -> float:
    """Seconds a node played a part: what it reported, else the part's length if it finished, else nothing."""
    if d.played_s is not None:
        return max(d.played_s, 0.0)
    return (d.expected_s or 0.0) if d.state == DeliveryState.FINISHED else 0.0


def is_preempted(reason: str | None) -> bool:
    return bool(reason) and _PREEMPTED_WORD in (reason or "").lower()


def played_fully(state: str, reason: str | None, played_s: float | None, expected_s: float | None) -> bool:
    """Finished, not preempted, and played to the end (within max(1 s, 2 %) of the part's length)."""
    if state != DeliveryState.FINISHED or is_preempted(reason):
        return False
    if played_s is None or not expected_s:
        return True
    return played_s >= expected_s - max(1.0, 0.02 * expected_s)


def node_stats(deliveries: Sequence[DeliveryRow]) -> tuple[int, int, float]:
    """(clusters targeted, clusters that played every part fully, longest time one cluster played).

    A broadcast has one delivery per cluster and playlist part (recorded audio, then each relay);
    the parts play one after the other, so a cluster's airtime is the sum over its parts.
    """
    fully: dict[str, bool] = {}
    seconds: dict[str, float] = defaultdict(float)
    for d in deliveries:
        fully[d.node_id] = fully.get(d.node_id, True) and d.played_fully
        seconds[d.node_id] += aired_s(d)
    return len(fully), sum(fully.values()), max(seconds.values(), default=0.0)


class _Names:
    """Names of nodes, zones and segments and the segment of each slot, read as plain rows.

    ``slot_ids``: the slots to know (a page names at most MAX_LIMIT broadcasts; a site has 10,000 slots).
    """

    def __init__(self, session: Session, slot_ids: Collection[str] = ()) -> None:
        zone, node, segment = Zone.__table__.c, Node.__table__.c, Segment.__table__.c  # Core: no ORM row overhead
        self.zones: dict[str, str] = {z: name for z, name in session.execute(select(zone.id, zone.name))}
        self.nodes: dict[str, tuple[str, str]] = {
            node_id: (name, zone_id) for node_id, name, zone_id in session.execute(select(node.id, node.name, node.zone_id))}
        self.segments: dict[str, str] = {s: name for s, name in session.execute(select(segment.id, segment.name))}
        self.slot_segments: dict[str, str | None] = {}
        wanted = sorted(set(slot_ids))
        if wanted:
            query = select(Slot.id, Slot.segment_id)
            if len(wanted) <= MAX_LIMIT:  # beyond (a report's year), all slots' two columns cost less than a huge IN
                query = query.where(Slot.id.in_(wanted))
            self.slot_segments = {slot_id: segment_id for slot_id, segment_id in session.execute(query)}


class _Lookup(_Names):
    """The names, and every slot with its targets and the zones of each group (for the reconciliation)."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.slots = {s.id: s for s in session.scalars(
            select(Slot).options(selectinload(Slot.targets), selectinload(Slot.items),
                                 selectinload(Slot.group_targets)))}
        self.slot_segments = {s.id: s.segment_id for s in self.slots.values()}
        self.group_zones: dict[str, set[str]] = defaultdict(set)
        for group_id, node_id in session.execute(select(NodeGroupMember.group_id, NodeGroupMember.node_id)):
            zone = self.nodes.get(node_id, ("", ""))[1]
            if zone:
                self.group_zones[group_id].add(zone)

    def reach(self, slot: Slot | None) -> tuple[bool, list[str]]:
        """(whole ward?, the zones a slot plays in: its zones and those of its groups' clusters)."""
        if slot is None:
            return False, []
        zones = set(slot.zone_ids)
        for group in slot.group_ids:
            zones |= self.group_zones.get(group, set())
        return slot.whole_ward, sorted(zones)


_DELIVERY = Delivery.__table__.c
_DELIVERY_COLUMNS = (_DELIVERY.broadcast_id, _DELIVERY.node_id, _DELIVERY.part, _DELIVERY.command_id, _DELIVERY.state,
                     _DELIVERY.reason, _DELIVERY.issued_at, _DELIVERY.received_at, _DELIVERY.ready_at,
                     _DELIVERY.started_at, _DELIVERY.finished_at, _DELIVERY.played_s)
_INSTANTS = frozenset({"issued_at", "received_at", "ready_at", "started_at", "finished_at"})
# For counts only: the instants read as NULL (converting 60,000 datetimes is most of a month's page).
_DELIVERY_COUNTING = tuple(null().label(c.key) if c.key in _INSTANTS else c for c in _DELIVERY_COLUMNS)
# A delivery as a plain row of _DELIVERY_COLUMNS (unpacked: a Row's attributes cost a microsecond each).
DeliveryRecord = Row[int, str, int, str, str, str | None, dt.datetime, dt.datetime | None, dt.datetime | None,
                     dt.datetime | None, dt.datetime | None, float | None]
Deliveries = dict[int, list[DeliveryRecord]]  # per broadcast id, by node and part


def _deliveries(session: Session, broadcast_ids: Sequence[int], instants: bool = True) -> Deliveries:
    """The deliveries of these broadcasts as plain rows (a month's page holds 12,000: ORM objects cost seconds)."""
    found: Deliveries = defaultdict(list)
    columns = _DELIVERY_COLUMNS if instants else _DELIVERY_COUNTING
    for i in range(0, len(broadcast_ids), 500):
        chunk = select(*columns).where(_DELIVERY.broadcast_id.in_(broadcast_ids[i:i + 500]))
        for row in session.execute(chunk.order_by(_DELIVERY.broadcast_id, _DELIVERY.node_id, _DELIVERY.part)).all():
            found[row[0]].append(row)
    return found


def _row(b: Broadcast, rows: Sequence[DeliveryRecord], look: _Names,
         commands: dict[str, tuple[dt.datetime | None, float | None]], zone: str | None, with_text: bool) -> BroadcastRow:
    # The segment stored when it fired; rows older than migration 0007 of a slot deleted since have none.
    segment_id = b.segment_id or (look.slot_segments.get(b.slot_id) if b.slot_id else None)
    parts = len({part for _, _, part, *_ in rows})
    deliveries: list[DeliveryRow] = []
    for _, node_id, part, command_id, state, reason, issued, received, ready, started, finished, played in rows:
        node_name, zone_id = look.nodes.get(node_id, (node_id, ""))
        if zone and zone_id != zone:
            continue
        published, expected = commands.get(command_id, (None, None))
        if expected is None and parts <= 1:
            expected = b.duration_s
        deliveries.append(DeliveryRow(
            node_id=node_id, node_name=node_name, zone_id=zone_id, zone_name=look.zones.get(zone_id, zone_id),
            part=part, state=state, state_vi=DELIVERY_VI.get(state, state), reason=reason, command_id=command_id,
            issued_at=issued, published_at=published, received_at=received, ready_at=ready, started_at=started,
            finished_at=finished, played_s=played, expected_s=expected,
            played_fully=played_fully(state, reason, played, expected), preempted=is_preempted(reason),
        ))
    targeted, fully, airtime = node_stats(deliveries)
    return BroadcastRow(
        id=b.id, occurrence_key=b.occurrence_key, slot_id=b.slot_id, segment_id=segment_id,
        segment_name=look.segments.get(segment_id) if segment_id else None, kind=b.kind, priority=b.priority,
        title=b.title, scheduled_at=b.scheduled_at, fired_at=b.fired_at, start_at=b.start_at,
        completed_at=b.completed_at, status=b.status, status_vi=BROADCAST_VI.get(b.status, b.status), reason=b.reason,
        duration_s=b.duration_s, targeted=targeted, played_fully=fully,
        coverage=(fully / targeted) if targeted else None, airtime_s=airtime,
        preempted=is_preempted(b.reason) or any(d.preempted for d in deliveries), deliveries=deliveries,
        text=b.text if with_text else None, targets=b.targets,
    )


def _rows(session: Session, broadcasts: Sequence[Broadcast], look: _Names, zone: str | None,
          with_text: bool, with_deliveries: bool = True) -> list[BroadcastRow]:
    deliveries = _deliveries(session, [b.id for b in broadcasts], instants=with_deliveries)
    commands = _commands(session, deliveries)
    rows = [_row(b, deliveries.get(b.id, []), look, commands, zone, with_text) for b in broadcasts]
    return rows if with_deliveries else [replace(b, deliveries=[]) for b in rows]  # they lack their instants


def _subset(b: BroadcastRow, deliveries: list[DeliveryRow]) -> BroadcastRow:
    """The same broadcast seen through some of its deliveries (one TDP's clusters)."""
    targeted, fully, airtime = node_stats(deliveries)
    reason = None if b.status == BroadcastStatus.PARTIAL else b.reason  # "5/6 cụm loa…" is about the whole
    return replace(b, deliveries=deliveries, targeted=targeted, played_fully=fully, reason=reason,
                   coverage=fully / targeted if targeted else None, airtime_s=airtime,
                   preempted=is_preempted(b.reason) or any(d.preempted for d in deliveries))


def _commands(session: Session, deliveries: Deliveries) -> dict[str, tuple[dt.datetime | None, float | None]]:
    """Per command: when it was published and the length of what it plays (from its payload)."""
    ids = sorted({d.command_id for rows in deliveries.values() for d in rows})
    found: dict[str, tuple[dt.datetime | None, float | None]] = {}
    for i in range(0, len(ids), 500):
        rows = session.execute(select(Command.id, Command.published_at, Command.payload)
                               .where(Command.id.in_(ids[i:i + 500])))
        for cid, at, payload in rows:
            found[cid] = (at, _payload_seconds(payload))
    return found


def _payload_seconds(payload: Any) -> float | None:
    if not isinstance(payload, dict):
        return None
    for key in ("audio", "stream"):
        ref = payload.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("duration_s"), int | float):
            return float(ref["duration_s"])
    return None


OUTCOMES = (*(s.value for s in BroadcastStatus), "preempted")


def _where(query: Select[Any], *, period: Period | None, zone: str | None, segment: str | None,
           priority: str | None, outcome: str | None) -> Select[Any]:
    if period is not None:
        query = query.where(Broadcast.scheduled_at >= period.start, Broadcast.scheduled_at < period.end)
    if priority:
        if priority not in {p.value for p in Priority}:
            raise InvalidInput(f"mức ưu tiên không hợp lệ {priority!r}; chọn một trong: "
                               + ", ".join(p.value for p in Priority), where="priority")
        query = query.where(Broadcast.priority == priority)
    if segment:
        query = query.where(or_(Broadcast.segment_id == segment, and_(
            Broadcast.segment_id.is_(None), Broadcast.slot_id.in_(select(Slot.id).where(Slot.segment_id == segment)))))
    if outcome:
        if outcome not in OUTCOMES:
            raise InvalidInput(f"kết quả không hợp lệ {outcome!r}; chọn một trong: {', '.join(OUTCOMES)}",
                               where="outcome")
        if outcome == "preempted":
            query = query.where(or_(
                Broadcast.reason.ilike(f"%{_PREEMPTED_WORD}%"),
                exists().where(Delivery.broadcast_id == Broadcast.id, Delivery.reason.ilike(f"%{_PREEMPTED_WORD}%")),
            ))
        else:
            query = query.where(Broadcast.status == outcome)
    if zone:
        in_zone = exists().where(Delivery.broadcast_id == Broadcast.id, Delivery.node_id == Node.id,
                                 Node.zone_id == zone)
        no_deliveries = ~exists().where(Delivery.broadcast_id == Broadcast.id)
        slot_targets_zone = exists().where(SlotTarget.slot_id == Broadcast.slot_id, SlotTarget.zone_id == zone)
        slot_group_in_zone = exists().where(
            SlotGroupTarget.slot_id == Broadcast.slot_id, NodeGroupMember.group_id == SlotGroupTarget.group_id,
            Node.id == NodeGroupMember.node_id, Node.zone_id == zone)
        whole_ward_slot = and_(Broadcast.slot_id.is_not(None),
                               ~exists().where(SlotTarget.slot_id == Broadcast.slot_id),
                               ~exists().where(SlotGroupTarget.slot_id == Broadcast.slot_id))
        query = query.where(or_(in_zone, and_(no_deliveries, or_(slot_targets_zone, slot_group_in_zone,
                                                                 whole_ward_slot))))
    return query


def query(session: Session, *, period: Period | None = None, zone: str | None = None, segment: str | None = None,
          priority: str | None = None, outcome: str | None = None, limit: int = 50, offset: int = 0,
          newest_first: bool = True, with_text: bool = False, with_deliveries: bool = True) -> Page:
    """A page of the as-run log. With ``zone``, only that TDP's clusters are shown and counted in coverage.

    ``with_deliveries=False``: a summary, each row with its counts and coverage but no ``deliveries``.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit phải từ 1 đến {MAX_LIMIT}", where="limit")
    if offset < 0:
        raise InvalidInput("offset không được âm", where="offset")
    ids = _where(select(Broadcast.id), period=period, zone=zone, segment=segment, priority=priority, outcome=outcome)
    total = session.scalar(select(func.count()).select_from(ids.subquery())) or 0
    order = (Broadcast.scheduled_at.desc(), Broadcast.id.desc()) if newest_first else (
        Broadcast.scheduled_at.asc(), Broadcast.id.asc())
    rows = list(session.scalars(select(Broadcast).where(Broadcast.id.in_(ids)).order_by(*order).limit(limit).offset(offset)))
    look = _Names(session, slot_ids=[b.slot_id for b in rows if b.slot_id and not b.segment_id])
    return Page(total=total, limit=limit, offset=offset,
                items=_rows(session, rows, look, zone, with_text, with_deliveries))


def broadcasts_in(session: Session, period: Period, *, with_text: bool = False,
                  look: _Names | None = None) -> list[BroadcastRow]:
    """Every broadcast scheduled in the period, oldest first, with all its deliveries (for reports)."""
    rows = list(session.scalars(
        select(Broadcast).where(Broadcast.scheduled_at >= period.start, Broadcast.scheduled_at < period.end)
        .order_by(Broadcast.scheduled_at, Broadcast.id)
    ))
    if look is None:
        look = _Names(session, slot_ids=[b.slot_id for b in rows if b.slot_id and not b.segment_id])
    return _rows(session, rows, look, None, with_text)


# reconciliation --------------------------------------------------------------------------------------
class Category(enum.StrEnum):
    AIRED = "aired"  # every cluster played it fully
    PARTIAL = "partial"  # played, but not fully on every cluster
    PREEMPTED = "preempted"  # stopped by a higher-priority broadcast (an emergency, or a priority bulletin)
    MISSED = "missed"  # the service did not fire it (down past the grace period, or no record at all)
    NOT_APPROVED = "not_approved"  # refused: content not approved
    NOT_AIRED = "not_aired"  # refused for another reason (no content, no clusters in the zone)
    FAILED = "failed"  # nothing played anywhere: no cluster played any of it, or the audio could not be made
    IN_PROGRESS = "in_progress"  # due now: being prepared or on air
    FUTURE = "future"  # not yet due


CATEGORY_VI = {
    Category.AIRED: "phát đầy đủ", Category.PARTIAL: "phát một phần", Category.PREEMPTED: "bị ngắt do phát khẩn cấp",
    Category.MISSED: "bị lỡ", Category.NOT_APPROVED: "chưa được phê duyệt", Category.NOT_AIRED: "không phát",
    Category.FAILED: "lỗi", Category.IN_PROGRESS: "đang phát", Category.FUTURE: "chưa đến giờ",
}
PREEMPTED_BY_PRIORITY_VI = "bị ngắt do bản tin ưu tiên"  # a node's reason "preempted by priority command …"


def category_vi(category: Category, reason: str | None) -> str:
    """The category in Vietnamese; a broadcast cut off by a *priority* (not emergency) bulletin says so."""
    if category == Category.PREEMPTED and "preempted by priority" in (reason or "").lower():
        return PREEMPTED_BY_PRIORITY_VI
    return CATEGORY_VI[category]


NOT_AIRED_FULLY = frozenset({Category.PARTIAL, Category.PREEMPTED, Category.MISSED, Category.NOT_APPROVED,
                             Category.NOT_AIRED, Category.FAILED})
NOT_AIRED_AT_ALL = NOT_AIRED_FULLY - {Category.PARTIAL}
NO_RECORD_REASON = "không có bản ghi phát sóng (dịch vụ không chạy vào giờ phát)"


def _delivery_summary(deliveries: Sequence[DeliveryRow], limit: int = 4) -> str:
    bad = [d for d in deliveries if not d.played_fully]
    parts = [f"{d.node_id}{f' (phần {d.part + 1})' if d.part else ''}: {d.state_vi}"
             + (f" ({d.reason})" if d.reason else "") for d in bad[:limit]]
    if len(bad) > limit:
        parts.append(f"… và {len(bad) - limit} lượt khác")
    return "; ".join(parts)


def classify(row: BroadcastRow) -> tuple[Category, str | None]:
    """The category of a broadcast (or of one TDP's view of it, see :func:`zone_view`) and why."""
    status = row.status
    if status in (BroadcastStatus.PREPARING, BroadcastStatus.ON_AIR):
        return Category.IN_PROGRESS, row.reason
    if status == BroadcastStatus.MISSED:
        return Category.MISSED, row.reason
    if status == BroadcastStatus.NOT_AIRED:
        reason = (row.reason or "").lower()
        if any(word in reason for word in _APPROVAL_WORDS):
            return Category.NOT_APPROVED, row.reason
        return Category.NOT_AIRED, row.reason
    if not row.deliveries:
        return (Category.PREEMPTED if is_preempted(row.reason) else Category.FAILED), row.reason
    if row.played_fully == row.targeted:
        return Category.AIRED, None
    why = "; ".join(part for part in (row.reason, _delivery_summary(row.deliveries)) if part)
    if row.preempted:
        return Category.PREEMPTED, why
    if row.played_fully or row.airtime_s > 0:
        return Category.PARTIAL, why
    return Category.FAILED, why


@dataclass
class ReconRow:
    scheduled_at: dt.datetime
    local_time: str  # dd/mm/yyyy HH:MM in the site's zone
    planned: bool  # an occurrence of a slot (stored: a scheduled broadcast); False: emergency, manual, demo
    slot_id: str | None
    title: str
    segment_id: str | None
    segment_name: str | None
    kind: str
    priority: str
    whole_ward: bool  # the slot plays on every cluster
    zone_ids: list[str]  # the slot's zones
    group_ids: list[str]  # the slot's cluster groups
    reach_zones: list[str]  # every TDP the slot reaches (its zones and its groups' clusters' zones)
    category: Category
    category_vi: str
    reason: str | None
    broadcast_id: int | None
    status: str | None
    targeted: int
    played_fully: int
    coverage: float | None
    airtime_s: float
    broadcast: BroadcastRow | None = None  # with deliveries; omitted from API output

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "broadcast"}
        data["category"] = self.category.value
        return data

    def targets_zone(self, zone: str) -> bool:
        if self.broadcast is not None and self.broadcast.deliveries:
            return any(d.zone_id == zone for d in self.broadcast.deliveries)
        return self.planned and (self.whole_ward or zone in self.reach_zones)


@dataclass
class Reconciliation:
    period: Period
    generated_at: dt.datetime
    rows: list[ReconRow]

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(r.category.value for r in self.rows)
        return {c.value: found.get(c.value, 0) for c in Category}

    @property
    def total(self) -> int:
        return len(self.rows)

    def page(self, limit: int | None = None, offset: int = 0) -> list[ReconRow]:
        """Rows from ``offset``, at most ``limit`` (None: all); ``total`` and ``counts`` stay over every row."""
        if limit is not None and not 1 <= limit <= MAX_RECON_LIMIT:
            raise InvalidInput(f"limit phải từ 1 đến {MAX_RECON_LIMIT}", where="limit")
        if offset < 0:
            raise InvalidInput("offset không được âm", where="offset")
        return self.rows[offset:] if limit is None else self.rows[offset:offset + limit]

    def as_dict(self, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
        """``total`` rows (``counts`` over all of them), of which ``rows`` from ``offset``, at most ``limit``."""
        shown = self.page(limit, offset)
        return {"period": self.period.as_dict(), "generated_at": self.generated_at, "counts": self.counts,
                "categories_vi": {c.value: CATEGORY_VI[c] for c in Category}, "total": len(self.rows),
                "limit": limit, "offset": offset, "rows": [r.as_dict() for r in shown]}


def _planned_since(session: Session) -> dict[str, dt.datetime]:
    """Per slot, from when its current rule plans occurrences that have no stored row.

    The slot's last ``slot.created`` / ``slot.updated`` audit entry (earlier occurrences were never planned,
    or were recorded by :func:`record_unaired` before the change); a slot changed only outside the API
    has none: then its first stored broadcast (before it, nothing ever ran it).
    """
    from radio.logbook.audit import SLOT_CREATED, SLOT_UPDATED, AuditEntry

    query = (select(AuditEntry.entity_id, func.max(AuditEntry.at))
             .where(AuditEntry.action.in_([SLOT_CREATED, SLOT_UPDATED]), AuditEntry.entity_type == "slot")
             .group_by(AuditEntry.entity_id))
    since = {str(slot_id): at for slot_id, at in session.execute(query) if slot_id is not None}
    unaudited = set(session.scalars(select(Slot.id))) - since.keys()
    if unaudited:
        first = select(Broadcast.slot_id, func.min(Broadcast.scheduled_at)).where(Broadcast.slot_id.is_not(None))
        if len(unaudited) <= MAX_LIMIT:
            first = first.where(Broadcast.slot_id.in_(sorted(unaudited)))
        since.update({str(slot_id): at for slot_id, at in session.execute(first.group_by(Broadcast.slot_id))
                      if slot_id in unaudited})
    return since


def record_unaired(session: Session, slot_ids: Collection[str], *, tz: dt.tzinfo, grace_s: float = 300,
                   now: dt.datetime | None = None, lookback: dt.timedelta = dt.timedelta(days=7)) -> int:
    """Store a ``missed`` row for each past occurrence of these slots that has none; call before changing them.

    After a slot is deleted, disabled, re-segmented or rescheduled its past must not change: aired
    occurrences already carry what they were (segment, targets); this records the ones that left no
    row (the service was down and never caught up), as the slot is now, so that past periods are
    described by stored rows alone. Occurrences within ``grace_s`` of ``now`` may still fire: left alone.
    A slot never run and never audited is looked at over ``lookback`` only. Returns the rows added.
    """
    now = now or utcnow()
    until = now - dt.timedelta(seconds=grace_s)
    since_of = _planned_since(session)
    added = 0
    for slot_id in sorted(set(slot_ids)):
        slot = session.get(Slot, slot_id)
        if slot is None or not slot.enabled:
            continue
        since = since_of.get(slot_id) or (now - lookback)
        if since >= until:
            continue
        keys = {occurrence_key(slot_id, at): at for at in occurrences(SlotRule.from_slot(slot), since, until, tz)}
        if not keys:
            continue
        stored = set(session.scalars(select(Broadcast.occurrence_key).where(
            Broadcast.slot_id == slot_id, Broadcast.scheduled_at >= since, Broadcast.scheduled_at < until)))
        for key, at in keys.items():
            if key in stored:
                continue
            session.add(Broadcast(occurrence_key=key, slot_id=slot_id, kind="scheduled", title=slot.name,
                                  priority=slot.priority, scheduled_at=at, status=BroadcastStatus.MISSED,
                                  reason=NO_RECORD_REASON, completed_at=now))
            added += 1
    if added:
        session.flush()
    return added


def _parse_choices(value: str | None, allowed: Collection[str], where: str, what: str) -> set[str]:
    if not value:
        return set()
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    wrong = sorted(chosen - set(allowed))
    if wrong:
        raise InvalidInput(f"{what} không hợp lệ {', '.join(repr(w) for w in wrong)}; chọn một hoặc nhiều "
                           f"(cách nhau bằng dấu phẩy) trong: {', '.join(allowed)}", where=where)
    return chosen


PRIORITIES = tuple(p.value for p in Priority)
CATEGORIES = tuple(c.value for c in Category)


def reconcile(session: Session, period: Period, *, now: dt.datetime | None = None, grace_s: float = 300,
              zone: str | None = None, segment: str | None = None, priority: str | None = None,
              outcome: str | None = None, with_text: bool = False) -> Reconciliation:
    """Every planned occurrence in the period with what happened, plus unplanned broadcasts.

    Past occurrences are the stored broadcast rows: each scheduled one is a planned occurrence, with the
    segment and targets its slot had when it fired (so deleting or editing a slot later changes nothing).
    Occurrences without a row come from the enabled slots as they are now, from the slot's last change
    on (see :func:`_planned_since`; :func:`record_unaired` stores the older ones before a change).
    With ``zone``, rows are those playing on that TDP and are classified by that TDP's clusters only.
    ``priority`` (normal, priority, emergency) and ``outcome`` (a :class:`Category`; several separated by
    commas) keep only matching rows; ``counts`` then counts those.
    """
    priorities = _parse_choices(priority, PRIORITIES, "priority", "mức ưu tiên")
    categories = _parse_choices(outcome, CATEGORIES, "outcome", "kết quả")
    now = now or utcnow()
    tz = period.tz
    look = _Lookup(session)
    since_of = _planned_since(session)
    broadcasts = {b.occurrence_key: b for b in broadcasts_in(session, period, with_text=with_text, look=look)}
    rows: list[ReconRow] = []
    for slot in sorted(look.slots.values(), key=lambda s: s.id):
        whole, reach = look.reach(slot)
        if not slot.enabled or (segment and slot.segment_id != segment) or (zone and not whole and zone not in reach):
            continue
        since = since_of.get(slot.id)
        for at in occurrences(SlotRule.from_slot(slot), period.start, period.end, tz):
            if occurrence_key(slot.id, at) in broadcasts:  # listed below, as it was when it fired
                continue
            if since is not None and at < since:
                continue
            if at > now:
                category, reason = Category.FUTURE, None
            elif (now - at).total_seconds() <= grace_s:
                category, reason = Category.IN_PROGRESS, None
            else:
                category, reason = Category.MISSED, NO_RECORD_REASON
            rows.append(ReconRow(
                scheduled_at=at, local_time=f"{at.astimezone(tz):%d/%m/%Y %H:%M}", planned=True, slot_id=slot.id,
                title=slot.name, segment_id=slot.segment_id,
                segment_name=look.segments.get(slot.segment_id) if slot.segment_id else None, kind="scheduled",
                priority=slot.priority, whole_ward=whole, zone_ids=slot.zone_ids, group_ids=slot.group_ids,
                reach_zones=reach, category=category, category_vi=CATEGORY_VI[category], reason=reason,
                broadcast_id=None, status=None, targeted=0, played_fully=0, coverage=None, airtime_s=0.0,
            ))
    for b in broadcasts.values():
        if segment and b.segment_id != segment:
            continue
        owner = look.slots.get(b.slot_id) if b.slot_id else None
        row = _recon_row(b, tz, zone, slot=owner, look=look)
        if zone and not row.targets_zone(zone):
            continue
        rows.append(row)
    if priorities:
        rows = [r for r in rows if r.priority in priorities]
    if categories:
        rows = [r for r in rows if r.category.value in categories]
    rows.sort(key=lambda r: (r.scheduled_at, r.slot_id or "", r.broadcast_id or 0))
    return Reconciliation(period=period, generated_at=now, rows=rows)


def _recon_row(b: BroadcastRow, tz: dt.tzinfo, zone: str | None, *, slot: Slot | None, look: _Lookup) -> ReconRow:
    """A stored broadcast as a reconciliation row; a scheduled one was a planned occurrence when it fired."""
    shown = _subset(b, [d for d in b.deliveries if d.zone_id == zone]) if zone else b
    category, reason = classify(shown)
    if b.targets is not None:  # as the slot was when it fired
        zone_ids, group_ids = list(b.targets.get("zones", [])), list(b.targets.get("groups", []))
        whole, reach = not zone_ids and not group_ids, list(b.targets.get("reach", []))
    else:
        whole, reach = look.reach(slot)
        zone_ids, group_ids = (slot.zone_ids, slot.group_ids) if slot else ([], [])
    return ReconRow(
        scheduled_at=b.scheduled_at, local_time=f"{b.scheduled_at.astimezone(tz):%d/%m/%Y %H:%M}",
        planned=b.kind == "scheduled" and b.slot_id is not None,
        slot_id=b.slot_id, title=b.title, segment_id=b.segment_id, segment_name=b.segment_name, kind=b.kind,
        priority=b.priority, whole_ward=whole, zone_ids=zone_ids, group_ids=group_ids, reach_zones=reach,
        category=category, category_vi=category_vi(category, reason), reason=reason, broadcast_id=b.id,
        status=b.status,
        targeted=shown.targeted, played_fully=shown.played_fully, coverage=shown.coverage, airtime_s=shown.airtime_s,
        broadcast=shown,
    )


def zone_view(row: ReconRow, zone: str) -> tuple[Category, str | None, BroadcastRow | None]:
    """How one TDP fared in a reconciliation row: its category, why, and the broadcast seen from its clusters."""
    b = row.broadcast
    if b is None or not b.deliveries:
        return row.category, row.reason, None
    sub = _subset(b, [d for d in b.deliveries if d.zone_id == zone])
    category, reason = classify(sub)
    return category, reason, sub
