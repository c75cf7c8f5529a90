"""Read-side queries shared by the API, the pages and the CLI."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from radio.models import Broadcast, ItemKind, Node, NodeGroupMember, Slot, SlotItem, Zone
from radio.schedule.recurrence import SlotRule, occurrences
from radio.web.schemas import OccurrenceOut, SlotOut


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
    if item.kind == ItemKind.RELAY:
        return f"relay:{item.relay_url} ({(item.relay_s or 0) / 60:g} phút)"
    if item.kind == ItemKind.AUDIO:
        return f"audio:{item.asset_id}"
    return str(item.bulletin_id)


def slots(session: Session) -> list[Slot]:
    return list(session.scalars(
        select(Slot).options(selectinload(Slot.items), selectinload(Slot.targets)).order_by(Slot.start_time, Slot.id)
    ))


def upcoming(session: Session, tz: dt.tzinfo, start: dt.datetime, days: int,
             zone: str | None = None) -> list[OccurrenceOut]:
    """Occurrences of enabled slots in [start, start + days), optionally only those playing on one zone."""
    end = start + dt.timedelta(days=days)
    result: list[OccurrenceOut] = []
    group_zones: dict[str, set[str]] = {}
    for group_id, zone_id in session.execute(
        select(NodeGroupMember.group_id, Node.zone_id).join(Node, Node.id == NodeGroupMember.node_id)
    ):
        group_zones.setdefault(group_id, set()).add(zone_id)
    for slot in slots(session):
        covers = set(slot.zone_ids).union(*(group_zones.get(g, set()) for g in slot.group_ids))
        if not slot.enabled or (zone and not slot.whole_ward and zone not in covers):
            continue
        for at in occurrences(SlotRule.from_slot(slot), start, end, tz):  # type: ignore[arg-type]
            result.append(OccurrenceOut(
                slot_id=slot.id, slot_name=slot.name, at=at, local_time=at.astimezone(tz).strftime("%a %d/%m %H:%M"),
                zone_ids=slot.zone_ids, bulletins=[describe_item(i) for i in slot.items],
            ))
    result.sort(key=lambda o: (o.at, o.slot_id))
    return result


def broadcasts(session: Session, limit: int = 50, offset: int = 0) -> list[Broadcast]:
    return list(session.scalars(
        select(Broadcast).options(selectinload(Broadcast.deliveries))
        .order_by(Broadcast.scheduled_at.desc(), Broadcast.id.desc()).limit(limit).offset(offset)
    ))
