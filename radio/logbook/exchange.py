"""Machine-readable export for exchange with a provincial information-source system (JSON).

One document: the station (the ward), its zones (TDP) and loudspeaker clusters, the segments, the
schedule with its recurrence (RFC 5545 RRULE plus the explicit fields), the bulletins, and the
as-run results per broadcast and per cluster for a period. Field by field in docs/exchange.md.

The document ends with ``digest``: the SHA-256 of the canonical JSON of every other key (sorted
keys, no spaces, UTF-8), so a receiver can check it arrived whole; ``audit`` names the audit chain's
head at export time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from radio.logbook import audit
from radio.logbook.asrun import BroadcastRow, Period, broadcasts_in, query
from radio.logbook.reports import site_name_of
from radio.models import Bulletin, Node, NodeGroup, Segment, Slot, Zone, utcnow
from radio.schedule.recurrence import WEEKDAYS, SlotRule

SCHEMA = "radio.exchange/1"
SCHEMA_VERSION = 1
_RRULE_DAY = dict(zip(WEEKDAYS, ("MO", "TU", "WE", "TH", "FR", "SA", "SU"), strict=True))


def instant(value: dt.datetime | None) -> str | None:
    """UTC ISO 8601 with a ``Z``: ``2024-09-04T23:30:00Z`` (fractions of a second only when present)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def rrule_of(slot: Slot) -> str | None:
    """The weekly part of a slot as an RFC 5545 RRULE (None for a slot that airs on its one-off dates only)."""
    rule = SlotRule.from_slot(slot)
    if rule.one_off_only:
        return None
    days = rule.weekdays or WEEKDAYS
    return f"FREQ=WEEKLY;INTERVAL={rule.interval_weeks};BYDAY={','.join(_RRULE_DAY[d] for d in days)};WKST=MO"


def _schedule(slot: Slot) -> dict[str, Any]:
    rule = SlotRule.from_slot(slot)
    return {
        "id": slot.id, "name": slot.name, "segment_id": slot.segment_id, "priority": slot.priority,
        "enabled": slot.enabled, "start_time": slot.start_time.strftime("%H:%M:%S"),
        "duration_s": slot.duration_s, "whole_ward": slot.whole_ward, "zone_ids": slot.zone_ids,
        "group_ids": slot.group_ids,
        "items": [{"position": i.position, "kind": i.kind, "bulletin_id": i.bulletin_id, "asset_id": i.asset_id,
                   "relay_url": i.relay_url, "relay_s": i.relay_s} for i in slot.items],
        "recurrence": {
            "rrule": rrule_of(slot),
            "weekdays": list(rule.weekdays), "interval_weeks": rule.interval_weeks,
            "dates": [d.isoformat() for d in rule.dates], "exclude_dates": [d.isoformat() for d in rule.exclude_dates],
            "valid_from": rule.valid_from.isoformat() if rule.valid_from else None,
            "valid_until": rule.valid_until.isoformat() if rule.valid_until else None,
            "holidays": rule.holidays,
        },
    }


def _as_run(row: BroadcastRow) -> dict[str, Any]:
    return {
        "broadcast_id": row.id, "occurrence_key": row.occurrence_key, "slot_id": row.slot_id,
        "segment_id": row.segment_id, "kind": row.kind, "priority": row.priority, "title": row.title,
        "text": row.text, "scheduled_at": instant(row.scheduled_at), "fired_at": instant(row.fired_at),
        "start_at": instant(row.start_at), "completed_at": instant(row.completed_at), "status": row.status,
        "reason": row.reason, "duration_s": row.duration_s, "airtime_s": round(row.airtime_s, 3),
        "coverage": {"targeted": row.targeted, "played_fully": row.played_fully,
                     "ratio": None if row.coverage is None else round(row.coverage, 4)},
        "deliveries": [{
            "cluster_id": d.node_id, "zone_id": d.zone_id, "state": d.state, "reason": d.reason,
            "part": d.part, "expected_s": d.expected_s,
            "command_id": d.command_id, "issued_at": instant(d.issued_at), "published_at": instant(d.published_at),
            "received_at": instant(d.received_at), "ready_at": instant(d.ready_at),
            "started_at": instant(d.started_at), "finished_at": instant(d.finished_at), "played_s": d.played_s,
            "played_fully": d.played_fully,
        } for d in row.deliveries],
    }


def build(session: Session, settings: Any, period: Period | None = None, *,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """The exchange document; without a period, the whole as-run history."""
    now = now or utcnow()
    zones = list(session.scalars(select(Zone).options(selectinload(Zone.nodes)).order_by(Zone.id)))
    slots = list(session.scalars(select(Slot).options(selectinload(Slot.items), selectinload(Slot.targets),
                                                      selectinload(Slot.group_targets)).order_by(Slot.id)))
    groups = list(session.scalars(select(NodeGroup).options(selectinload(NodeGroup.members)).order_by(NodeGroup.id)))
    if period is not None:
        rows = broadcasts_in(session, period, with_text=True)
    else:
        rows, offset = [], 0
        while True:
            page = query(session, limit=1000, offset=offset, newest_first=False, with_text=True)
            rows += page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
    chain = audit.verify(session)
    head = chain.head or audit.head(session)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "generated_at": instant(now),
        "timezone": str(settings.tz),
        "period": period.as_dict() if period else None,
        "station": {"id": getattr(settings, "site_id", None), "name": site_name_of(settings), "level": "commune",
                    "kind": "đài truyền thanh thông minh"},
        "zones": [{"id": z.id, "name": z.name, "cluster_ids": [n.id for n in z.nodes]} for z in zones],
        "clusters": [{"id": n.id, "name": n.name, "zone_id": n.zone_id, "online": n.online,
                      "last_seen_at": instant(n.last_seen_at)}
                     for n in session.scalars(select(Node).order_by(Node.id))],
        "groups": [{"id": g.id, "name": g.name, "cluster_ids": g.node_ids} for g in groups],
        "segments": [{"id": s.id, "name": s.name} for s in session.scalars(select(Segment).order_by(Segment.id))],
        "schedule": [_schedule(s) for s in slots],
        "bulletins": [{"id": b.id, "segment_id": b.segment_id, "title": b.title, "text": b.text, "status": b.status,
                       "audio_sha256": b.audio_sha256, "updated_at": instant(b.updated_at)}
                      for b in session.scalars(select(Bulletin).order_by(Bulletin.id))],
        "as_run": [_as_run(r) for r in rows],
        "audit": {"head_id": head.last_id, "head_hash": head.hash, "chain_ok": chain.ok},
    }
    doc["digest"] = digest(doc)
    return doc


def digest(doc: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every key but ``digest`` itself."""
    body = {k: v for k, v in doc.items() if k != "digest"}
    return hashlib.sha256(audit.canonical(body).encode("utf-8")).hexdigest()


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
