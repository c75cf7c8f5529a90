"""Stored slots → :class:`~radio.schedule.rules.PlannedSlot`: targets resolved, durations estimated.

    validate_slots(session, candidates, settings)   the rules broken by new or changed slots
    planned_duration(session, slot, settings)        a slot's planned length, or its estimate

Targets resolve to node ids plus one marker ``zone:<id>`` per targeted zone, so that two slots on
the same zone conflict even before the zone has loudspeakers (and keep conflicting once it does);
a group is exactly its nodes. The whole ward is every node and every zone.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from radio.models import AudioAsset, Bulletin, ItemKind, Node, NodeGroupMember, Priority, Slot, SlotItem, Zone, utcnow
from radio.schedule.recurrence import SlotRule
from radio.schedule.rules import PlannedSlot, RuleViolation, check, estimate_duration
from radio.settings import Settings
from radio.sound.store import AudioStore

UNKNOWN_RECORDING_S = 60.0  # a bulletin's recording that is not in the audio store (it would fail on air anyway)


@dataclass
class _World:
    """What target resolution and estimates need from the database, read once."""

    zone_names: dict[str, str]
    zone_nodes: dict[str, set[str]]
    node_zone: dict[str, str]
    group_nodes: dict[str, set[str]]
    bulletins: dict[str, tuple[str | None, str | None]]  # id -> (text, audio_sha256)
    assets: dict[str, float]  # id -> duration_s


def validate_slots(
    session: Session, candidates: list[Slot], settings: Settings, *, now: dt.datetime | None = None
) -> list[RuleViolation]:
    """The programme rules broken by ``candidates`` against the database's enabled slots.

    Candidates may be new (transient) or changed rows; they replace stored slots with the same id.
    The check runs from today (site time zone) for 366 days; violations purely between stored slots
    are left out. Nothing is written or flushed.
    """
    with session.no_autoflush:
        stored = session.scalars(
            select(Slot)
            .where(Slot.enabled.is_(True))
            .options(selectinload(Slot.items), selectinload(Slot.targets), selectinload(Slot.group_targets))
        ).all()
        merged = {slot.id: slot for slot in stored}
        merged.update({slot.id: slot for slot in candidates})
        slots = sorted(merged.values(), key=lambda slot: slot.id)
        world = _read_world(session, slots)
    store = AudioStore(settings.audio_dir)
    planned = [_planned(slot, world, store) for slot in slots]
    tz = settings.tz
    today = (now or utcnow()).astimezone(tz).date()
    violations = check(
        planned,
        tz=tz,
        quiet_hours=settings.quiet_hours,
        session_max_minutes=settings.session_max_minutes,
        sessions_per_day=settings.sessions_per_day,
        horizon_start=dt.datetime.combine(today, dt.time(), tzinfo=tz).astimezone(dt.UTC),
        zone_names=world.zone_names,
    )
    ids = {slot.id for slot in candidates}
    return [violation for violation in violations if violation.involves(ids)]


def planned_duration(session: Session, slot: Slot, settings: Settings) -> tuple[float, bool]:
    """``(seconds, estimated)``: the slot's planned ``duration_s``, or an estimate from its playlist."""
    if slot.duration_s is not None:
        return slot.duration_s, False
    with session.no_autoflush:
        world = _read_world(session, [slot])
    return _estimate(slot, world, AudioStore(settings.audio_dir)), True


def _read_world(session: Session, slots: Sequence[Slot]) -> _World:
    items = [item for slot in slots for item in slot.items]
    bulletin_ids = {item.bulletin_id for item in items if item.bulletin_id}
    asset_ids = {item.asset_id for item in items if item.asset_id}
    zone_nodes: dict[str, set[str]] = defaultdict(set)
    node_zone: dict[str, str] = {}
    for node_id, zone_id in session.execute(select(Node.id, Node.zone_id)):
        zone_nodes[zone_id].add(node_id)
        node_zone[node_id] = zone_id
    group_nodes: dict[str, set[str]] = defaultdict(set)
    for group_id, node_id in session.execute(select(NodeGroupMember.group_id, NodeGroupMember.node_id)):
        group_nodes[group_id].add(node_id)
    bulletins = {
        ident: (text, audio)
        for ident, text, audio in session.execute(
            select(Bulletin.id, Bulletin.text, Bulletin.audio_sha256).where(Bulletin.id.in_(bulletin_ids))
        )
    }
    assets = {
        ident: duration
        for ident, duration in session.execute(
            select(AudioAsset.id, AudioAsset.duration_s).where(AudioAsset.id.in_(asset_ids))
        )
    }
    # Rows set on a candidate's items directly (not yet in the database) win.
    for item in items:
        bulletin = item.__dict__.get("bulletin")
        if isinstance(bulletin, Bulletin):
            bulletins[bulletin.id] = (bulletin.text, bulletin.audio_sha256)
        asset = item.__dict__.get("asset")
        if isinstance(asset, AudioAsset):
            assets[asset.id] = asset.duration_s
    zone_names = {ident: name for ident, name in session.execute(select(Zone.id, Zone.name))}
    return _World(zone_names, zone_nodes, node_zone, group_nodes, bulletins, assets)


def _planned(slot: Slot, world: _World, store: AudioStore) -> PlannedSlot:
    zone_ids = {target.zone_id for target in slot.targets}
    group_ids = {target.group_id for target in slot.group_targets}
    if not zone_ids and not group_ids:  # the whole ward
        zone_ids = set(world.zone_names) | set(world.zone_nodes)
    nodes = {f"zone:{zone}" for zone in zone_ids}
    for zone in zone_ids:
        nodes |= world.zone_nodes.get(zone, set())
    for group in group_ids:
        members = world.group_nodes.get(group, set())
        nodes |= members
        zone_ids |= {world.node_zone[node] for node in members if node in world.node_zone}
    if slot.duration_s is not None:
        duration, estimated = slot.duration_s, False
    else:
        duration, estimated = _estimate(slot, world, store), True
    return PlannedSlot(
        id=slot.id,
        name=slot.name,
        rule=SlotRule.from_slot(slot),
        node_ids=frozenset(nodes),
        zone_ids=frozenset(zone_ids),
        priority=str(slot.priority or Priority.NORMAL),
        duration_s=duration,
        enabled=slot.enabled is not False,  # a transient Slot() has enabled=None until flushed: default on
        duration_estimated=estimated,
    )


def _estimate(slot: Slot, world: _World, store: AudioStore) -> float:
    texts: list[str] = []
    recordings: list[float] = []
    relays: list[float] = []
    for item in _items(slot.items):
        kind = item.kind or ItemKind.BULLETIN
        if kind == ItemKind.RELAY:
            relays.append(item.relay_s or 0.0)
        elif kind == ItemKind.AUDIO:
            recordings.append(world.assets.get(item.asset_id or "", UNKNOWN_RECORDING_S))
        elif item.bulletin_id in world.bulletins:
            text, audio = world.bulletins[item.bulletin_id]
            if audio:  # the recording plays instead of the text (as the broadcaster does)
                recordings.append(_recording_duration(store, audio))
            elif text:
                texts.append(text)
    return estimate_duration(texts, recordings, relays)


def _items(items: Iterable[SlotItem]) -> list[SlotItem]:
    return sorted(items, key=lambda item: item.position or 0)


def _recording_duration(store: AudioStore, sha256: str) -> float:
    try:
        path = store.path_for(sha256)
    except (FileNotFoundError, ValueError):
        return UNKNOWN_RECORDING_S
    return _measure(str(path))


@functools.lru_cache(maxsize=1024)
def _measure(path: str) -> float:
    """Duration of a stored file; content-addressed, so a path's answer never changes."""
    from radio.sound.ffmpeg import mp3_duration, probe_duration

    with open(path, "rb") as handle:
        head = handle.read()
    return mp3_duration(head) or probe_duration(path)


__all__ = ["UNKNOWN_RECORDING_S", "planned_duration", "validate_slots"]
