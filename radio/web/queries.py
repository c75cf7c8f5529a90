"""Read-side queries shared by the API, the pages and the CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import ColumnElement, String, cast, select
from sqlalchemy.orm import Session, selectinload

from radio.errors import NotFound
from radio.models import (
    Broadcast,
    ItemKind,
    Node,
    NodeGroupMember,
    Segment,
    Slot,
    SlotGroupTarget,
    SlotItem,
    SlotTarget,
    Zone,
)
from radio.schedule.recurrence import SlotRule, occurrences
from radio.web.schemas import OccurrenceOut, SlotOut

# Expansions of windows up to this many local days are memoised (today, the week ahead); longer ones
# (the calendar's 60 days) would hold too many instants for 10,000 slots and are computed each time.
CACHED_WINDOW_DAYS = 8
MAX_CACHED = 25_000  # rules × windows in use (10,000 slots: today and the week ahead ≈ 15,000, 8.6 MiB)
_SLOT = Slot.__table__.c
# The recurrence fields read as text, the memo key: no driver or SQLAlchemy conversions (time, date and
# JSON parsing cost 15-35 µs a row), parsed only when a rule is not in the memo.
_RULE_TEXTS = tuple(cast(c, String) for c in (_SLOT.start_time, _SLOT.weekdays, _SLOT.interval_weeks, _SLOT.dates,
                                             _SLOT.exclude_dates, _SLOT.valid_from, _SLOT.valid_until, _SLOT.holidays))
RuleTexts = tuple[str | None, ...]
_expansions: dict[tuple[RuleTexts, dt.tzinfo, dt.date, dt.date], tuple[dt.datetime, ...]] = {}


def zones(session: Session) -> list[Zone]:
    return list(session.scalars(select(Zone).options(selectinload(Zone.nodes)).order_by(Zone.id)))


def slot_out(slot: Slot) -> SlotOut:
    return SlotOut.model_validate({
        **{c: getattr(slot, c) for c in SlotOut.model_fields if hasattr(slot, c)},
        "start_time": slot.start_time.strftime("%H:%M:%S" if slot.start_time.second else "%H:%M"),
        "bulletin_ids": [item.bulletin_id for item in slot.items if item.bulletin_id],
        "playlist": [describe_item(item) for item in slot.items],
        "group_ids": slot.group_ids,
    })


def describe_item(item: SlotItem) -> str:
    """A playlist entry in one word: the bulletin id, ``audio:<asset>`` or ``relay:<url> (N phút)``."""
    return _describe(item.kind, item.bulletin_id, item.asset_id, item.relay_url, item.relay_s)


def _describe(kind: str, bulletin_id: str | None, asset_id: str | None, relay_url: str | None,
              relay_s: float | None) -> str:
    if kind == ItemKind.RELAY:
        return f"relay:{relay_url} ({(relay_s or 0) / 60:g} phút)"
    if kind == ItemKind.AUDIO:
        return f"audio:{asset_id}"
    return str(bulletin_id)


def slots(session: Session) -> list[Slot]:
    return list(session.scalars(
        select(Slot).options(selectinload(Slot.items), selectinload(Slot.targets), selectinload(Slot.group_targets))
        .order_by(Slot.start_time, Slot.id)
    ))


def check_known(session: Session, *, zone: str | None = None, segment: str | None = None) -> None:
    """A filter naming a TDP or segment that does not exist is a typo, not "nothing there": NotFound."""
    if zone is not None and session.get(Zone, zone) is None:
        raise NotFound("zone", zone)
    if segment is not None and session.get(Segment, segment) is None:
        raise NotFound("segment", segment)


def upcoming(session: Session, tz: dt.tzinfo, start: dt.datetime, days: int,
             zone: str | None = None) -> list[OccurrenceOut]:
    """Occurrences of enabled slots in [start, start + days), optionally only those playing on one zone.

    The slots are read as plain rows, not ORM objects, and each rule's expansion is memoised under the
    rule's stored text: an edited slot is a new key, so every change shows at once, in every process.
    """
    check_known(session, zone=zone)
    end = start + dt.timedelta(days=days)
    first, last = start.astimezone(tz).date(), end.astimezone(tz).date()
    zones_of = _pairs(session, SlotTarget.__table__.c.slot_id, SlotTarget.__table__.c.zone_id)
    groups_of = _pairs(session, SlotGroupTarget.__table__.c.slot_id, SlotGroupTarget.__table__.c.group_id)
    group_zones = _group_zones(session) if zone else {}
    rules = select(_SLOT.id, _SLOT.name, *_RULE_TEXTS).where(_SLOT.enabled.is_(True))
    due: list[tuple[str, str, list[dt.datetime]]] = []
    for slot_id, name, *texts in session.execute(rules).all():  # all(): one fetch, not one a row
        if zone and not _plays_on(zone, zones_of.get(slot_id, ()), groups_of.get(slot_id, ()), group_zones):
            continue
        ats = [at for at in expand(tuple(texts), tz, first, last) if start <= at < end]
        if ats:
            due.append((slot_id, name, ats))
    playlists = _playlists(session, {slot_id for slot_id, _, _ in due})
    result = [
        OccurrenceOut(slot_id=slot_id, slot_name=name, at=at, local_time=at.astimezone(tz).strftime("%a %d/%m %H:%M"),
                      zone_ids=sorted(zones_of.get(slot_id, ())), group_ids=sorted(groups_of.get(slot_id, ())),
                      bulletins=playlists.get(slot_id, []))
        for slot_id, name, ats in due for at in ats
    ]
    result.sort(key=lambda o: (o.at, o.slot_id))
    return result


def expand(rule: RuleTexts, tz: dt.tzinfo, first: dt.date, last: dt.date) -> tuple[dt.datetime, ...]:
    """Every instant of a rule (as text) on the local days ``first``..``last``; memoised for short windows."""
    if (last - first).days > CACHED_WINDOW_DAYS:
        return _expand(rule, tz, first, last)
    key = (rule, tz, first, last)
    found = _expansions.get(key)
    if found is None:
        if len(_expansions) >= MAX_CACHED:  # yesterday's windows: start afresh rather than track ages
            _expansions.clear()
        found = _expansions[key] = _expand(rule, tz, first, last)
    return found


def _expand(rule: RuleTexts, tz: dt.tzinfo, first: dt.date, last: dt.date) -> tuple[dt.datetime, ...]:
    start_time, weekdays, interval, dates, exclude, valid_from, valid_until, holidays = rule
    slot = Slot(start_time=dt.time.fromisoformat(str(start_time)), weekdays=weekdays or "",
                interval_weeks=int(interval or 1), dates=json.loads(dates or "[]"),
                exclude_dates=json.loads(exclude or "[]"), valid_from=_date(valid_from), valid_until=_date(valid_until),
                holidays=holidays)
    lo = dt.datetime.combine(first, dt.time(), tzinfo=tz)
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return tuple(occurrences(SlotRule.from_slot(slot), lo, hi, tz))


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _pairs(session: Session, key: ColumnElement[str], value: ColumnElement[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for k, v in session.execute(select(key, value)).all():
        found[k].append(v)
    return found


def _group_zones(session: Session) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for group_id, zone_id in session.execute(
        select(NodeGroupMember.group_id, Node.zone_id).join(Node, Node.id == NodeGroupMember.node_id)
    ):
        found[group_id].add(zone_id)
    return found


def _plays_on(zone: str, zone_ids: Sequence[str], group_ids: Sequence[str], group_zones: dict[str, set[str]]) -> bool:
    """A slot with neither zones nor groups plays on the whole ward."""
    if not zone_ids and not group_ids:
        return True
    return zone in zone_ids or any(zone in group_zones.get(g, ()) for g in group_ids)


def _playlists(session: Session, slot_ids: set[str]) -> dict[str, list[str]]:
    """The playlists of these slots in words, from plain rows."""
    item = SlotItem.__table__.c
    found: dict[str, list[str]] = defaultdict(list)
    rows = session.execute(select(item.slot_id, item.kind, item.bulletin_id, item.asset_id, item.relay_url,
                                  item.relay_s).order_by(item.slot_id, item.position)).all()
    for slot_id, *entry in rows:
        if slot_id in slot_ids:
            found[slot_id].append(_describe(*entry))
    return found


def broadcasts(session: Session, limit: int = 50, offset: int = 0) -> list[Broadcast]:
    return list(session.scalars(
        select(Broadcast).options(selectinload(Broadcast.deliveries))
        .order_by(Broadcast.scheduled_at.desc(), Broadcast.id.desc()).limit(limit).offset(offset)
    ))
