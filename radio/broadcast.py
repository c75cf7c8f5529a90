"""One occurrence end to end: claim it → prepare audio → store commands → publish → settle.

The occurrence key is unique in the database, so a double trigger, a restart or a second service
instance can never air the same occurrence twice: whoever inserts the row first owns it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radio.db import transaction
from radio.dispatch import topics
from radio.dispatch.messages import AudioRef, CommandType
from radio.dispatch.messages import Command as CommandMsg
from radio.dispatch.mqtt import MqttClient
from radio.logbook.labels import BROADCAST_VI
from radio.models import (
    Broadcast,
    BroadcastStatus,
    Bulletin,
    BulletinStatus,
    Command,
    Delivery,
    DeliveryState,
    Node,
    Slot,
    utcnow,
)
from radio.settings import Settings
from radio.speech.prepare import prepare_speech

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to air: resolved from a slot, or given directly (emergency, demo, manual)."""

    occurrence_key: str
    kind: str
    title: str
    priority: str
    scheduled_at: dt.datetime
    bulletins: Sequence[Bulletin]
    zone_ids: Sequence[str]  # empty = the whole ward
    slot_id: str | None = None


class Broadcaster:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], mqtt: MqttClient) -> None:
        self.settings = settings
        self.factory = factory
        self.mqtt = mqtt

    # entry points --------------------------------------------------------------------------------
    def fire_slot(self, slot_id: str, scheduled_at: dt.datetime) -> int | None:
        """Air one occurrence of a slot; returns the broadcast id, or None if it was already taken."""
        with self.factory() as session:
            slot = session.get(Slot, slot_id)
            if slot is None or not slot.enabled:
                log.info("slot %s no longer exists or is disabled; occurrence skipped", slot_id)
                return None
            plan = Plan(
                occurrence_key=occurrence_key(slot_id, scheduled_at), kind="scheduled", title=slot.name,
                priority=slot.priority, scheduled_at=scheduled_at,
                bulletins=[item.bulletin for item in slot.items], zone_ids=slot.zone_ids, slot_id=slot.id,
            )
        return self.air(plan)

    def air(self, plan: Plan) -> int | None:
        broadcast_id = self._claim(plan)
        if broadcast_id is None:
            log.info("occurrence %s already handled; not airing it again", plan.occurrence_key)
            return None
        now = utcnow()
        late = (now - plan.scheduled_at).total_seconds()
        if late > self.settings.misfire_grace_s:
            self._close(broadcast_id, BroadcastStatus.MISSED,
                        f"dịch vụ không chạy lúc {plan.scheduled_at:%H:%M} UTC, trễ {late:.0f} giây")
            return broadcast_id
        unapproved = [b.id for b in plan.bulletins if b.status != BulletinStatus.APPROVED]
        if unapproved:
            self._close(broadcast_id, BroadcastStatus.NOT_AIRED,
                        "nội dung chưa được phê duyệt: " + ", ".join(unapproved))
            log.warning("KHÔNG PHÁT %s: nội dung chưa được phê duyệt (%s)", plan.title, ", ".join(unapproved))
            return broadcast_id
        texts = [b.text for b in plan.bulletins if b.text]
        if not texts:
            self._close(broadcast_id, BroadcastStatus.NOT_AIRED, "chương trình không có nội dung")
            return broadcast_id
        try:
            audio = prepare_speech(texts, self.settings)
        except Exception as exc:  # recorded as the broadcast's outcome; the scheduler keeps running
            log.exception("audio preparation failed for %s", plan.occurrence_key)
            self._close(broadcast_id, BroadcastStatus.FAILED, f"không tạo được âm thanh: {exc}")
            return broadcast_id
        log.info("Đã tạo âm thanh cho «%s»: %.1f giây (%s%s)", plan.title, audio.duration_s, audio.engine,
                 ", từ bộ nhớ đệm" if audio.cached else "")
        commands = self._issue(broadcast_id, plan, "\n\n".join(texts), audio.sha256, audio.duration_s,
                               audio.engine)
        for command in commands:
            self.publish(command)
        return broadcast_id

    # steps -----------------------------------------------------------------------------------------
    def _claim(self, plan: Plan) -> int | None:
        try:
            with transaction(self.factory) as session:
                row = Broadcast(
                    occurrence_key=plan.occurrence_key, slot_id=plan.slot_id, kind=plan.kind, title=plan.title,
                    priority=plan.priority, scheduled_at=plan.scheduled_at, fired_at=utcnow(),
                    status=BroadcastStatus.PREPARING,
                )
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError:
            return None

    def _close(self, broadcast_id: int, status: BroadcastStatus, reason: str) -> None:
        with transaction(self.factory) as session:
            row = session.get_one(Broadcast, broadcast_id)
            row.status, row.reason, row.completed_at = status, reason, utcnow()

    def _issue(self, broadcast_id: int, plan: Plan, text: str, sha256: str, duration_s: float,
               engine: str) -> list[Command]:
        """Store deliveries and commands in one transaction, before anything is published."""
        site = self.settings.site_id
        now = utcnow()
        start_at = now + dt.timedelta(seconds=self.settings.command_lead_s)
        valid_until = start_at + dt.timedelta(seconds=self.settings.command_validity_s)
        audio = AudioRef(url=f"{self.settings.public_base_url}/audio/{sha256}.mp3", sha256=sha256,
                         duration_s=duration_s)
        with transaction(self.factory) as session:
            query = select(Node).order_by(Node.id)
            if plan.zone_ids:
                query = query.where(Node.zone_id.in_(plan.zone_ids))
            nodes = list(session.scalars(query))
            broadcast = session.get_one(Broadcast, broadcast_id)
            broadcast.text, broadcast.audio_sha256, broadcast.duration_s = text, sha256, duration_s
            broadcast.engine, broadcast.start_at = engine, start_at
            if not nodes:
                broadcast.status, broadcast.reason, broadcast.completed_at = (
                    BroadcastStatus.NOT_AIRED, "không có cụm loa nào trong vùng phát", now)
                return []
            broadcast.status = BroadcastStatus.ON_AIR
            targets = [topics.cmd_all(site)] if not plan.zone_ids else [
                topics.cmd_zone(site, z) for z in sorted({n.zone_id for n in nodes})]
            commands: list[Command] = []
            for topic in targets:
                command_id = uuid.uuid4().hex
                msg = CommandMsg(id=command_id, type=CommandType.PLAY, broadcast_id=broadcast_id,
                                 priority=plan.priority, title=plan.title, issued_at=now, start_at=start_at,
                                 valid_until=valid_until, audio=audio)  # type: ignore[arg-type]
                commands.append(Command(id=command_id, broadcast_id=broadcast_id, topic=topic,
                                        payload=msg.model_dump(mode="json", exclude_none=True),
                                        valid_until=valid_until))
                zone = None if topic == topics.cmd_all(site) else topic.rsplit("/", 1)[1]
                for node in nodes:
                    if zone is None or node.zone_id == zone:
                        session.add(Delivery(broadcast_id=broadcast_id, node_id=node.id, command_id=command_id,
                                             issued_at=now))
            session.add_all(commands)
        log.info("Phát «%s» tới %d cụm loa lúc %s", plan.title, len(nodes),
                 start_at.astimezone(self.settings.tz).strftime("%H:%M:%S"))
        return commands

    def publish(self, command: Command) -> None:
        self.mqtt.publish(command.topic, json.dumps(command.payload, ensure_ascii=False).encode(), qos=1)
        with transaction(self.factory) as session:
            row = session.get_one(Command, command.id)
            row.published_at, row.attempts = utcnow(), row.attempts + 1


def occurrence_key(slot_id: str, scheduled_at: dt.datetime) -> str:
    return f"slot:{slot_id}@{scheduled_at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


def settle(session: Session, broadcast: Broadcast, now: dt.datetime, timeout_s: float) -> bool:
    """Close a broadcast whose deliveries are all final, or whose time is up. Returns True if closed."""
    if broadcast.status != BroadcastStatus.ON_AIR:
        return False
    deliveries = broadcast.deliveries
    deadline = (broadcast.start_at or now) + dt.timedelta(seconds=(broadcast.duration_s or 0) + timeout_s)
    if now >= deadline:
        for d in deliveries:
            if not DeliveryState(d.state).final:
                online = session.get_one(Node, d.node_id).online
                d.state = DeliveryState.FAILED if online else DeliveryState.MISSED
                d.reason = "không nhận được báo cáo từ cụm loa" if online else "missed: offline"
    if not all(DeliveryState(d.state).final for d in deliveries):
        return False
    finished = sum(d.state == DeliveryState.FINISHED for d in deliveries)
    if finished == len(deliveries):
        broadcast.status = BroadcastStatus.COMPLETED
    elif finished:
        broadcast.status = BroadcastStatus.PARTIAL
        broadcast.reason = f"{finished}/{len(deliveries)} cụm loa phát xong"
    else:
        broadcast.status = BroadcastStatus.FAILED
        broadcast.reason = "không cụm loa nào phát xong"
    broadcast.completed_at = now
    log.info("Kết thúc «%s»: %s (%d/%d cụm loa phát xong)", broadcast.title, BROADCAST_VI[broadcast.status], finished,
             len(deliveries))
    return True
