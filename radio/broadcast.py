"""One occurrence end to end: claim it → check content → prepare audio → store commands → publish.

The occurrence key is unique in the database, so a double trigger, a restart or a second service
instance can never air the same occurrence twice: whoever inserts the row first owns it.

A playlist becomes *parts*: consecutive recorded items (spoken bulletins, uploaded recordings,
jingles) are joined into one audio file; each relay (tiếp âm) is a part of its own, started when the
previous part ends. Every targeted node gets one command per part, and one delivery row per part.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radio.db import transaction
from radio.dispatch import topics
from radio.dispatch.messages import AudioRef, CommandType, StreamRef
from radio.dispatch.messages import Command as CommandMsg
from radio.dispatch.mqtt import MqttClient
from radio.logbook.labels import BROADCAST_VI
from radio.models import (
    FINAL_DELIVERY_STATES,
    Alert,
    AudioAsset,
    Broadcast,
    BroadcastStatus,
    Bulletin,
    BulletinStatus,
    Command,
    Delivery,
    DeliveryState,
    ItemKind,
    Node,
    NodeGroupMember,
    Priority,
    Slot,
    targets_snapshot,
    utcnow,
)
from radio.settings import Settings
from radio.sound.compose import compose
from radio.sound.store import AudioStore
from radio.speech.prepare import PreparedAudio, SpeechPart, prepare_playlist
from radio.web.metrics import observe_fire_lag, timed_audio_prep

log = logging.getLogger(__name__)
PRIORITY_RANK = {Priority.NORMAL: 0, Priority.PRIORITY: 1, Priority.EMERGENCY: 2}
DELIVERIES = Delivery.metadata.tables["deliveries"]  # the Core table, for bulk inserts
# Fetch budget of a fan-out: every target downloads the first part's audio from this service at once, so the last
# one is ready only after all the others were served. Settings fetch_per_node_ms and fetch_mbit_s override these.
FETCH_PER_NODE_MS = 10.0  # the service spends ~1 ms of CPU per download; a simulated fleet's one core ~5-9 ms more
FETCH_MBIT_S = 100.0  # the service's uplink, shared by all nodes fetching at once


@dataclass(frozen=True, kw_only=True)
class Item:
    """One playlist entry, detached from the database session."""

    kind: str
    bulletin: Bulletin | None = None
    asset: AudioAsset | None = None
    relay_url: str | None = None
    relay_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to air: resolved from a slot, or given directly (emergency, demo, manual)."""

    occurrence_key: str
    kind: str
    title: str
    priority: str
    scheduled_at: dt.datetime
    items: Sequence[Item]
    zone_ids: Sequence[str] = ()  # zones and groups both empty = the whole ward
    group_ids: Sequence[str] = ()
    slot_id: str | None = None
    segment_id: str | None = None  # the slot's; else that of its first bulletin with one (emergency → Khẩn cấp)
    external_id: str | None = None
    valid_until: dt.datetime | None = None

    def stored_segment(self) -> str | None:
        if self.segment_id or self.slot_id:
            return self.segment_id
        return next((i.bulletin.segment_id for i in self.items if i.bulletin is not None and i.bulletin.segment_id),
                    None)

    @classmethod
    def of_bulletins(cls, bulletins: Sequence[Bulletin], **kw: object) -> Plan:
        return cls(items=[Item(kind=ItemKind.BULLETIN, bulletin=b) for b in bulletins], **kw)  # type: ignore[arg-type]


class Target(NamedTuple):
    """A targeted node: just what routing needs (loading 5,000 Node objects per fire costs more than the rest)."""

    id: str
    zone_id: str


class Routable(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def zone_id(self) -> str: ...


N = TypeVar("N", bound=Routable)


@dataclass(frozen=True, kw_only=True)
class Part:
    """A command's worth of a playlist: recorded audio, or a relay."""

    audio: PreparedAudio | None = None
    stream: StreamRef | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.audio.duration_s if self.audio else self.stream.duration_s  # type: ignore[union-attr]


class Broadcaster:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], mqtt: MqttClient) -> None:
        self.settings = settings
        self.factory = factory
        self.mqtt = mqtt
        self.store = AudioStore(settings.audio_dir)

    # entry points --------------------------------------------------------------------------------
    def fire_slot(self, slot_id: str, scheduled_at: dt.datetime) -> int | None:
        """Air one occurrence of a slot; returns the broadcast id, or None if it was already taken."""
        with self.factory() as session:
            slot = session.get(Slot, slot_id)
            if slot is None or not slot.enabled:
                log.info("slot %s no longer exists or is disabled; occurrence skipped", slot_id)
                return None
            items = [Item(kind=i.kind, bulletin=i.bulletin, asset=i.asset, relay_url=i.relay_url, relay_s=i.relay_s)
                     for i in slot.items]
            plan = Plan(
                occurrence_key=occurrence_key(slot_id, scheduled_at), kind="scheduled", title=slot.name,
                priority=slot.priority, scheduled_at=scheduled_at, items=items, zone_ids=slot.zone_ids,
                group_ids=slot.group_ids, slot_id=slot.id, segment_id=slot.segment_id,
            )
        return self.air(plan)

    def air(self, plan: Plan) -> int | None:
        if plan.kind == "scheduled":
            observe_fire_lag((utcnow() - plan.scheduled_at).total_seconds())
        broadcast_id = self._claim(plan)
        if broadcast_id is None:
            log.info("occurrence %s already handled; not airing it again", plan.occurrence_key)
            return None
        late = (utcnow() - plan.scheduled_at).total_seconds()
        if late > self.settings.misfire_grace_s:
            self._close(broadcast_id, BroadcastStatus.MISSED,
                        f"quá hạn {late:.0f} giây khi dịch vụ kích hoạt (giới hạn {self.settings.misfire_grace_s} giây)",
                        alert="missed")
            return broadcast_id
        bulletins = [i.bulletin for i in plan.items if i.bulletin is not None]
        unapproved = [b.id for b in bulletins if b.status != BulletinStatus.APPROVED]
        if unapproved:
            self._close(broadcast_id, BroadcastStatus.NOT_AIRED,
                        "nội dung chưa được phê duyệt: " + ", ".join(unapproved), alert="not_approved")
            log.warning("KHÔNG PHÁT «%s»: nội dung chưa được phê duyệt (%s)", plan.title, ", ".join(unapproved))
            return broadcast_id
        if not plan.items:
            self._close(broadcast_id, BroadcastStatus.NOT_AIRED, "chương trình không có nội dung")
            return broadcast_id
        try:
            with timed_audio_prep() as timing:
                parts = self._prepare(plan.items)
                timing["cached"] = all(p.audio is None or p.audio.cached for p in parts)
        except Exception as exc:  # recorded as the broadcast's outcome; the scheduler keeps running
            log.exception("audio preparation failed for %s", plan.occurrence_key)
            self._close(broadcast_id, BroadcastStatus.FAILED, f"không tạo được âm thanh: {exc}", alert="failed")
            return broadcast_id
        spoken = "\n\n".join(b.text for b in bulletins if b.text)
        try:
            commands = self._issue(broadcast_id, plan, spoken, parts)
        except Exception as exc:  # e.g. "database is locked": never leave the broadcast "preparing" for ever
            log.exception("could not store the commands of %s", plan.occurrence_key)
            self._close(broadcast_id, BroadcastStatus.FAILED, f"không lưu được lệnh phát: {exc}", alert="failed")
            return broadcast_id
        for command in commands:
            try:
                self.publish(command)
            except Exception:  # stored, so the outbox publishes it on a later tick
                log.exception("could not publish command %s now; the outbox will", command.id)
        return broadcast_id

    # steps -----------------------------------------------------------------------------------------
    def _claim(self, plan: Plan) -> int | None:
        try:
            with transaction(self.factory) as session:
                # What it is when it fires (segment, targets) is stored with it: reports never look at the slot again.
                row = Broadcast(
                    occurrence_key=plan.occurrence_key, slot_id=plan.slot_id, segment_id=plan.stored_segment(),
                    targets=targets_snapshot(session.connection(), plan.zone_ids, plan.group_ids),
                    kind=plan.kind, title=plan.title,
                    priority=plan.priority, scheduled_at=plan.scheduled_at, fired_at=utcnow(),
                    status=BroadcastStatus.PREPARING, external_id=plan.external_id,
                )
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError:
            return None

    def _close(self, broadcast_id: int, status: BroadcastStatus, reason: str, *, alert: str | None = None) -> None:
        with transaction(self.factory) as session:
            row = session.get_one(Broadcast, broadcast_id)
            row.status, row.reason, row.completed_at = status, reason, utcnow()
            if alert:
                session.add(Alert(kind=alert, message=f"«{row.title}»: {reason}", broadcast_id=broadcast_id))

    def _prepare(self, items: Sequence[Item]) -> list[Part]:
        """Group the playlist into parts and make each part's audio (cached by content)."""
        parts: list[Part] = []
        run: list[Item] = []

        def flush() -> None:
            if run:
                parts.append(self._recorded(run))
                run.clear()

        for item in items:
            if item.kind == ItemKind.RELAY:
                flush()
                assert item.relay_url and item.relay_s
                parts.append(Part(stream=StreamRef(url=item.relay_url, duration_s=item.relay_s)))
            else:
                run.append(item)
        flush()
        return parts

    def _recorded(self, run: Sequence[Item]) -> Part:
        speech = [i.bulletin for i in run if i.bulletin is not None and i.bulletin.text and not i.bulletin.audio_sha256]
        if len(speech) == len(run):  # the common case: spoken bulletins only, made in one pass
            audio = prepare_playlist([_speech_part(b) for b in speech], self.settings, store=self.store)
        else:
            pieces: list[str] = []
            for item in run:
                if item.asset is not None:
                    pieces.append(item.asset.sha256)
                elif item.bulletin is not None and item.bulletin.audio_sha256:
                    pieces.append(item.bulletin.audio_sha256)
                elif item.bulletin is not None and item.bulletin.text:
                    pieces.append(prepare_playlist([_speech_part(item.bulletin)], self.settings, chime=False,
                                                   store=self.store).sha256)
            audio = compose(pieces, self.settings, self.store)
        log.info("Âm thanh sẵn sàng: %.1f giây (%s%s)", audio.duration_s, audio.engine,
                 ", từ bộ nhớ đệm" if audio.cached else "")
        return Part(audio=audio, reasons=[audio.fallback_reason] if audio.fallback_reason else [])

    def lead_s(self, targets: int, first: Part) -> float:
        """Seconds from issuing to ``start_at``: the ``command_lead_s`` setting, or longer when that many nodes
        cannot all fetch the first part's audio from this service in time (docs/protocol.md, *Lead time*)."""
        lead = self.settings.command_lead_s
        if first.audio is None:  # a relay: nothing to fetch
            return lead
        try:
            size = first.audio.path.stat().st_size
        except OSError:
            size = 0
        s = self.settings
        per_node_s = float(getattr(s, "fetch_per_node_ms", FETCH_PER_NODE_MS)) / 1000 + size / (
            float(getattr(s, "fetch_mbit_s", FETCH_MBIT_S)) * 125_000)
        budget = targets * per_node_s  # one node alone fetches within command_lead_s
        if budget > lead:
            log.info("%d cụm loa cần khoảng %.1f giây để tải âm thanh (%d KiB): phát sau %.1f giây", targets, budget,
                     size // 1024, budget)
        return max(lead, budget)

    def _targets(self, session: Session, plan: Plan) -> list[Target]:
        query = select(Node.id, Node.zone_id).order_by(Node.id)
        if plan.zone_ids or plan.group_ids:
            in_groups = select(NodeGroupMember.node_id).where(NodeGroupMember.group_id.in_(plan.group_ids))
            query = query.where(Node.zone_id.in_(plan.zone_ids) | Node.id.in_(in_groups))
        return [Target(node_id, zone_id) for node_id, zone_id in session.execute(query)]

    def _start_after_higher_priority(self, session: Session, plan: Plan, nodes: list[Target],
                                     start_at: dt.datetime) -> dt.datetime:
        """A priority item on air on these nodes goes first: start after it ends (emergencies never wait)."""
        if plan.priority == Priority.EMERGENCY:
            return start_at
        rank = PRIORITY_RANK[Priority(plan.priority)]
        higher = [b for b in session.scalars(select(Broadcast).where(Broadcast.status == BroadcastStatus.ON_AIR))
                  if PRIORITY_RANK[Priority(b.priority)] > rank]  # usually none: then no per-node query at all
        if not higher:
            return start_at
        node_ids = {n.id for n in nodes}
        overlapping = {broadcast_id for broadcast_id, node_id in session.execute(
            select(Delivery.broadcast_id, Delivery.node_id).where(Delivery.broadcast_id.in_([b.id for b in higher])))
            if node_id in node_ids}
        for other in higher:
            if other.id in overlapping and other.start_at and other.duration_s:
                end = other.start_at + dt.timedelta(seconds=other.duration_s + 1)
                if end > start_at:
                    log.info("«%s» chờ «%s» (ưu tiên cao hơn) phát xong", plan.title, other.title)
                    start_at = end
        return start_at

    def _issue(self, broadcast_id: int, plan: Plan, text: str, parts: list[Part]) -> list[Command]:
        """Store deliveries and commands in one transaction, before anything is published."""
        site = self.settings.site_id
        now = utcnow()
        with transaction(self.factory) as session:
            nodes = self._targets(session, plan)
            broadcast = session.get_one(Broadcast, broadcast_id)
            total = sum(p.duration_s for p in parts)
            first = parts[0].audio
            broadcast.text, broadcast.duration_s = text or None, total
            broadcast.audio_sha256 = first.sha256 if first else None
            broadcast.engine = first.engine if first else "relay"
            reasons = [r for p in parts for r in p.reasons]
            if reasons:
                broadcast.reason = "; ".join(reasons)
            if not nodes:
                broadcast.status, broadcast.reason, broadcast.completed_at = (
                    BroadcastStatus.NOT_AIRED, "không có cụm loa nào trong vùng phát", now)
                return []
            start_at = now + dt.timedelta(seconds=self.lead_s(len(nodes), parts[0]))
            start_at = self._start_after_higher_priority(session, plan, nodes, start_at)
            broadcast.start_at = start_at
            broadcast.valid_until = plan.valid_until or (
                start_at + dt.timedelta(seconds=total + self.settings.command_validity_s))
            broadcast.status = BroadcastStatus.ON_AIR
            routes = _routes(site, plan, nodes)
            commands: list[Command] = []
            deliveries: list[dict[str, object]] = []
            part_start = start_at
            for index, part in enumerate(parts):
                valid_until = min(broadcast.valid_until,
                                  part_start + dt.timedelta(seconds=self.settings.command_validity_s))
                for topic, members in routes:
                    command_id = uuid.uuid4().hex
                    msg = CommandMsg(
                        id=command_id, type=CommandType.PLAY if part.audio else CommandType.RELAY,
                        broadcast_id=broadcast_id, priority=plan.priority, title=plan.title,  # type: ignore[arg-type]
                        issued_at=now, start_at=part_start, valid_until=valid_until, stream=part.stream,
                        audio=AudioRef(url=f"{self.settings.public_base_url}/audio/{part.audio.sha256}.mp3",
                                       sha256=part.audio.sha256, duration_s=part.audio.duration_s)
                        if part.audio else None,
                    )
                    commands.append(Command(id=command_id, broadcast_id=broadcast_id, topic=topic,
                                            payload=msg.model_dump(mode="json", exclude_none=True),
                                            valid_until=valid_until))
                    deliveries.extend({"broadcast_id": broadcast_id, "node_id": n.id, "command_id": command_id,
                                       "part": index, "issued_at": now, "state": DeliveryState.ISSUED.value}
                                      for n in members)
                part_start += dt.timedelta(seconds=part.duration_s)
            session.add_all(commands)
            # One Core executemany: 5,000 ORM objects (or even ORM bulk insert) cost 5-10× more before the first publish.
            session.connection().execute(insert(DELIVERIES), deliveries)
        log.info("Phát «%s» tới %d cụm loa lúc %s", plan.title, len(nodes),
                 start_at.astimezone(self.settings.tz).strftime("%H:%M:%S"))
        return commands

    def publish(self, command: Command) -> None:
        # The outbox sends it and marks it published; its worker resends it until answered or expired.
        from radio.dispatch.outbox import publish_command

        publish_command(self.factory, self.mqtt, command)


def _speech_part(bulletin: Bulletin) -> SpeechPart:
    assert bulletin.text is not None
    return SpeechPart(text=bulletin.text, engine=bulletin.engine, voice=bulletin.voice, rate=bulletin.rate)


def _routes(site: str, plan: Plan, nodes: Sequence[N]) -> list[tuple[str, list[N]]]:
    """Fewest publishes: the site topic for the whole ward, zone topics for zones, node topics for the rest."""
    if not plan.zone_ids and not plan.group_ids:
        return [(topics.cmd_all(site), list(nodes))]
    routes: list[tuple[str, list[N]]] = []
    zones = set(plan.zone_ids)
    for zone in sorted(zones):
        members = [n for n in nodes if n.zone_id == zone]
        if members:
            routes.append((topics.cmd_zone(site, zone), members))
    routes.extend((topics.cmd_node(site, n.id), [n]) for n in nodes if n.zone_id not in zones)
    return routes


def occurrence_key(slot_id: str, scheduled_at: dt.datetime) -> str:
    return f"slot:{slot_id}@{scheduled_at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


def settle(session: Session, broadcast: Broadcast, now: dt.datetime, timeout_s: float) -> bool:
    """Close a broadcast whose deliveries are all final, or whose time is up. Returns True if closed.

    A node played it fully when every part of it finished there; coverage counts such nodes.
    """
    if broadcast.status != BroadcastStatus.ON_AIR:
        return False
    deadline = (broadcast.start_at or now) + dt.timedelta(seconds=(broadcast.duration_s or 0) + timeout_s)
    if broadcast.valid_until is not None:  # a node back from offline may still play it until then
        deadline = max(deadline, broadcast.valid_until)
    # Called for every batch of node events and every few seconds: while anything is open (most calls), a count
    # answers without loading thousands of deliveries as objects.
    if now < deadline and session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.broadcast_id == broadcast.id, Delivery.state.not_in([s.value for s in FINAL_DELIVERY_STATES]))):
        return False
    deliveries = broadcast.deliveries
    if now >= deadline:
        for d in deliveries:
            if not DeliveryState(d.state).final:
                online = session.get_one(Node, d.node_id).online
                d.state = DeliveryState.FAILED if online else DeliveryState.MISSED
                d.reason = "không nhận được báo cáo từ cụm loa" if online else "missed: offline"
    if not all(DeliveryState(d.state).final for d in deliveries):
        return False
    by_node: dict[str, bool] = {}
    for d in deliveries:
        by_node[d.node_id] = by_node.get(d.node_id, True) and d.state == DeliveryState.FINISHED
    finished, targeted = sum(by_node.values()), len(by_node)
    if finished == targeted:
        broadcast.status = BroadcastStatus.COMPLETED
    elif finished:
        broadcast.status = BroadcastStatus.PARTIAL
        broadcast.reason = f"{finished}/{targeted} cụm loa phát trọn vẹn"
    else:
        broadcast.status = BroadcastStatus.FAILED
        broadcast.reason = "không cụm loa nào phát xong"
    broadcast.completed_at = now
    log.info("Kết thúc «%s»: %s (%d/%d cụm loa phát trọn vẹn)", broadcast.title, BROADCAST_VI[broadcast.status],
             finished, targeted)
    return True
