"""Emergencies (khẩn cấp): air at once on their targets, preempting whatever plays; also from CAP 1.2 alerts.

An emergency ignores quiet hours and session caps; nodes stop what they play, play it, and are free
again afterwards, so normal programming continues with the next slot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
from sqlalchemy import select

from radio.broadcast import Broadcaster, Plan, _routes
from radio.db import transaction
from radio.dispatch.messages import Command as CommandMsg
from radio.dispatch.messages import CommandType
from radio.errors import InvalidInput, NotFound
from radio.logbook import audit
from radio.models import (
    Broadcast,
    BroadcastStatus,
    Bulletin,
    BulletinStatus,
    Command,
    Node,
    Priority,
    Segment,
    Zone,
    utcnow,
)

log = logging.getLogger(__name__)
EMERGENCY_SEGMENT = "khan-cap"
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
MAX_TEXT = 5000


@dataclass(frozen=True, kw_only=True)
class EmergencyRequest:
    text: str
    title: str = "Thông báo khẩn cấp"
    zone_ids: Sequence[str] = ()  # empty = the whole ward
    actor: str = "system"
    valid_until: dt.datetime | None = None
    external_id: str | None = None
    occurrence_key: str | None = None  # default: a fresh "emergency:<bulletin id>"; CAP: one per alert


def trigger(broadcaster: Broadcaster, request: EmergencyRequest) -> int:
    """Create an approved emergency bulletin and air it now; returns the broadcast id.

    With ``request.occurrence_key`` already taken (the same CAP alert posted twice, perhaps at the same moment),
    the broadcast that took it is returned and nothing airs again.
    """
    text = request.text.strip()
    if not text:
        raise InvalidInput("nội dung khẩn cấp trống", where="text")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"nội dung khẩn cấp dài {len(text)} ký tự, tối đa {MAX_TEXT}", where="text")
    now = utcnow()
    with transaction(broadcaster.factory) as session:
        known = set(session.scalars(select(Zone.id).where(Zone.id.in_(request.zone_ids))))
        unknown = sorted(set(request.zone_ids) - known)
        if unknown:
            raise InvalidInput(f"không có tổ dân phố {', '.join(unknown)}", where="zones")
        bulletin = Bulletin(
            id=f"khan-cap-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}", title=request.title[:300], text=text,
            segment_id=EMERGENCY_SEGMENT if session.get(Segment, EMERGENCY_SEGMENT) else None,
            status=BulletinStatus.APPROVED, approved_by=request.actor, approved_at=now,
        )
        session.add(bulletin)
        session.flush()
        audit.record(session, actor=request.actor, action=audit.EMERGENCY_TRIGGERED, entity_type="bulletin",
                     entity_id=bulletin.id, before=None,
                     after=audit.snapshot(bulletin, {"zones": list(request.zone_ids) or ["all"],
                                                     "external_id": request.external_id}))
    log.warning("KHẨN CẤP do %s kích hoạt: «%s» trên %s", request.actor, request.title,
                ", ".join(request.zone_ids) or "toàn phường")
    key = request.occurrence_key or f"emergency:{bulletin.id}"
    broadcast_id = broadcaster.air(Plan.of_bulletins(
        [bulletin], occurrence_key=key, kind="emergency", title=request.title,
        priority=Priority.EMERGENCY, scheduled_at=now, zone_ids=list(request.zone_ids),
        external_id=request.external_id, valid_until=request.valid_until,
    ))
    if broadcast_id is None:  # the key was taken meanwhile (only a caller-given key can be)
        existing = _broadcast_by_key(broadcaster, key)
        assert existing is not None
        return existing
    return broadcast_id


def _broadcast_by_key(broadcaster: Broadcaster, key: str) -> int | None:
    with broadcaster.factory() as session:
        return session.scalar(select(Broadcast.id).where(Broadcast.occurrence_key == key))


def stop(broadcaster: Broadcaster, broadcast_id: int, reason: str) -> None:
    """Send a stop to the broadcast's nodes (e.g. a CAP Cancel), and note why on the broadcast."""
    site = broadcaster.settings.site_id
    with transaction(broadcaster.factory) as session:
        broadcast = session.get(Broadcast, broadcast_id)
        if broadcast is None:
            raise NotFound("broadcast", broadcast_id)
        node_ids = {d.node_id for d in broadcast.deliveries}
        nodes = list(session.scalars(select(Node).where(Node.id.in_(node_ids))))
        broadcast.reason = reason if not broadcast.reason else f"{broadcast.reason}; {reason}"
        zones = sorted({n.zone_id for n in nodes})
        now = utcnow()
        commands = []
        for topic, _members in _routes(site, Plan.of_bulletins([], occurrence_key="", kind="stop", title="",
                                                               priority=Priority.EMERGENCY, scheduled_at=now,
                                                               zone_ids=zones), nodes):
            command_id = uuid.uuid4().hex
            msg = CommandMsg(id=command_id, type=CommandType.STOP, broadcast_id=broadcast_id, priority="emergency",
                             title=reason[:300], issued_at=now, valid_until=now + dt.timedelta(minutes=5))
            commands.append(Command(id=command_id, broadcast_id=broadcast_id, topic=topic,
                                    payload=msg.model_dump(mode="json", exclude_none=True),
                                    valid_until=msg.valid_until))
        session.add_all(commands)
    for command in commands:
        broadcaster.publish(command)


# CAP 1.2 --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CapAlert:
    identifier: str
    sender: str
    status: str  # Actual | Exercise | System | Test | Draft
    msg_type: str  # Alert | Update | Cancel | Ack | Error
    references: list[str]  # identifiers of earlier alerts (Update / Cancel)
    headline: str
    description: str
    instruction: str
    expires: dt.datetime | None
    geocodes: list[str]
    sent: str = ""  # as written; with sender and identifier it names the alert (CAP 1.2 §3.2.1)

    @property
    def key(self) -> str:
        """The occurrence key of this alert's broadcast: one per (status, sender, identifier, sent), so the same
        alert posted twice airs once, and an Exercise never shares a key with an Actual alert."""
        return cap_key(self.status, self.sender, self.identifier, self.sent)


def cap_key(status: str, sender: str, identifier: str, sent: str) -> str:
    digest = hashlib.sha256("\n".join((sender, identifier, _instant_text(sent))).encode()).hexdigest()[:40]
    return f"cap:{status}:{digest}"


def _instant_text(sent: str) -> str:
    """``sent`` as one canonical UTC text (2026-11-27T10:00:00+07:00 and 2026-11-27T03:00:00Z are one instant)."""
    try:
        when = dt.datetime.fromisoformat(sent.strip())
    except ValueError:
        return sent.strip()
    if when.tzinfo is None:
        return when.isoformat()
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_cap(xml: bytes) -> CapAlert:
    """Parse a CAP 1.2 alert safely (no entities, no external references); prefer its Vietnamese info block."""
    try:
        root = SafeET.fromstring(xml)
    except Exception as exc:  # defusedxml raises several kinds; all mean "not acceptable XML"
        raise InvalidInput(f"XML không hợp lệ: {exc}", where="body") from None
    ns = {"cap": CAP_NS}
    if root.tag != f"{{{CAP_NS}}}alert":
        raise InvalidInput("không phải bản tin CAP 1.2 (thiếu phần tử alert)", where="alert")

    def text(el: object, name: str, required: bool = False) -> str:
        found = el.find(f"cap:{name}", ns)  # type: ignore[attr-defined]
        value = (found.text or "").strip() if found is not None else ""
        if required and not value:
            raise InvalidInput(f"thiếu trường {name}", where=name)
        return value

    infos = root.findall("cap:info", ns)
    info = next((i for i in infos if text(i, "language").lower().startswith("vi")), infos[0] if infos else None)
    msg_type = text(root, "msgType", True)
    if info is None and msg_type != "Cancel":
        raise InvalidInput("thiếu phần info", where="info")
    expires = None
    if info is not None and text(info, "expires"):
        try:
            expires = dt.datetime.fromisoformat(text(info, "expires"))
        except ValueError:
            raise InvalidInput(f"thời điểm không hợp lệ: {text(info, 'expires')}", where="expires") from None
        if expires.tzinfo is None:
            raise InvalidInput("expires phải có múi giờ", where="expires")
    refs = []
    for ref in text(root, "references").split():
        parts = ref.split(",")  # sender,identifier,sent
        refs.append(parts[1] if len(parts) >= 2 else parts[0])
    geocodes = [] if info is None else [
        (g.findtext("cap:value", default="", namespaces=ns) or "").strip()
        for area in info.findall("cap:area", ns) for g in area.findall("cap:geocode", ns)
    ]
    return CapAlert(
        identifier=text(root, "identifier", True), sender=text(root, "sender", True),
        status=text(root, "status", True), msg_type=msg_type, references=refs,
        headline=text(info, "headline") if info is not None else "",
        description=text(info, "description") if info is not None else "",
        instruction=text(info, "instruction") if info is not None else "",
        expires=expires, geocodes=[g for g in geocodes if g], sent=text(root, "sent"),
    )


@dataclass(frozen=True, kw_only=True)
class CapOutcome:
    action: str  # aired | replaced | cancelled | ignored
    broadcast_id: int | None
    detail: str


def handle_cap(broadcaster: Broadcaster, alert: CapAlert, *, zone_map: dict[str, list[str]],
               test_zone: str | None) -> CapOutcome:
    """Apply a CAP alert: Alert airs, Update replaces, Cancel stops; Exercise/Test reach the test zone only.

    Idempotent: an alert already received (same sender, identifier and sent) returns its broadcast and airs
    nothing again. An Update or Cancel acts only on the referenced alerts of its own status: an Exercise or
    Test Cancel never stops an Actual alert's broadcast.
    """
    if alert.msg_type in ("Alert", "Update"):
        existing = _broadcast_by_key(broadcaster, alert.key)
        if existing is not None:
            return CapOutcome(action="duplicate", broadcast_id=existing,
                              detail=f"bản tin CAP {alert.identifier} đã nhận trước đó (lượt phát số {existing})")
    earlier = _broadcasts_for(broadcaster, alert.references, alert.status)
    if alert.msg_type == "Cancel":
        for b in earlier:
            stop(broadcaster, b, f"CAP hủy bởi {alert.identifier}")
        return CapOutcome(action="cancelled", broadcast_id=earlier[0] if earlier else None,
                          detail=f"đã dừng {len(earlier)} lượt phát")
    if alert.msg_type not in ("Alert", "Update"):
        return CapOutcome(action="ignored", broadcast_id=None, detail=f"msgType {alert.msg_type} không cần phát")
    if alert.expires is not None and alert.expires <= utcnow():
        return CapOutcome(action="ignored", broadcast_id=None, detail="bản tin CAP đã hết hạn")
    zones = _zones_for(alert.geocodes, zone_map)
    if alert.status in ("Exercise", "Test", "Draft", "System"):
        if alert.status in ("Draft", "System") or test_zone is None:
            return CapOutcome(action="ignored", broadcast_id=None,
                              detail=f"status {alert.status}: không phát ra loa (chưa cấu hình vùng thử nghiệm)")
        zones = [test_zone]
    elif zones is None:
        raise InvalidInput("không có mã vùng (geocode) nào khớp với tổ dân phố đã cấu hình", where="area.geocode")
    for b in earlier:
        stop(broadcaster, b, f"CAP thay thế bởi {alert.identifier}")
    text = " ".join(p for p in (alert.headline + "." if alert.headline else "", alert.description,
                                alert.instruction) if p)
    broadcast_id = trigger(broadcaster, EmergencyRequest(
        text=text, title=alert.headline or "Cảnh báo khẩn cấp", zone_ids=zones, actor=f"CAP:{alert.sender}",
        valid_until=alert.expires, external_id=alert.identifier, occurrence_key=alert.key,
    ))
    return CapOutcome(action="replaced" if earlier else "aired", broadcast_id=broadcast_id,
                      detail=f"phát trên {', '.join(zones) or 'toàn phường'}")


def _zones_for(geocodes: list[str], zone_map: dict[str, list[str]]) -> list[str] | None:
    """Zones for the alert's geocodes: [] means the whole ward, None means none of ours."""
    zones: set[str] = set()
    matched = False
    for code in geocodes:
        if code in zone_map:
            matched = True
            if "all" in zone_map[code]:
                return []
            zones.update(zone_map[code])
    return sorted(zones) if matched else None


def _broadcasts_for(broadcaster: Broadcaster, identifiers: list[str], status: str) -> list[int]:
    """Broadcasts of the referenced alerts that have the same CAP status (Actual, Exercise, Test…).

    Broadcasts made before CAP keys existed (``emergency:…``) count as Actual.
    """
    if not identifiers:
        return []
    same_status = Broadcast.occurrence_key.startswith(f"cap:{status}:", autoescape=True)
    if status == "Actual":
        same_status = same_status | Broadcast.occurrence_key.startswith("emergency:")
    with broadcaster.factory() as session:
        return list(session.scalars(select(Broadcast.id).where(
            Broadcast.external_id.in_(identifiers), same_status,
            Broadcast.status.not_in([BroadcastStatus.NOT_AIRED, BroadcastStatus.MISSED]),
        ).order_by(Broadcast.id)))
