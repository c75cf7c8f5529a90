"""Hôm nay (the dashboard), Cụm loa (nodes) and one broadcast followed live (/phat/<id>)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from radio.errors import NotFound
from radio.logbook.labels import BROADCAST_VI, DELIVERY_VI
from radio.models import (
    FINAL_DELIVERY_STATES,
    Alert,
    Broadcast,
    BroadcastStatus,
    Bulletin,
    BulletinStatus,
    Command,
    Delivery,
    DeliveryState,
    Node,
    Zone,
    utcnow,
)
from radio.web import queries
from radio.web.deps import SessionDep, SettingsDep
from radio.web.pages.common import Reader, local_today, page_router, render

router = page_router()
ALERT_VI = {"missed": "Bị lỡ", "not_approved": "Chưa phê duyệt", "failed": "Lỗi phát", "silent": "Cụm loa im lặng"}
LIVE = (BroadcastStatus.PREPARING, BroadcastStatus.ON_AIR)


@dataclass
class NodeView:
    node: Node
    state: str  # playing | online | offline
    label: str
    playing_title: str | None = None


def node_views(session: Session, nodes: list[Node]) -> dict[str, NodeView]:
    """Each node's state as officers say it: đang phát, trực tuyến, mất kết nối."""
    playing: dict[str, str] = {}
    for node_id, title in session.execute(
        select(Delivery.node_id, Broadcast.title).join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(Delivery.state == DeliveryState.PLAYING, Broadcast.status.in_(LIVE))
    ):
        playing[node_id] = title
    commands = [n.playing_command_id for n in nodes if n.playing_command_id]
    if commands:  # the last heartbeat's "playing", unless the node has since reported that command ended
        ended = set(session.execute(
            select(Delivery.node_id, Delivery.command_id)
            .where(Delivery.command_id.in_(commands), Delivery.state.in_(list(FINAL_DELIVERY_STATES)))).all())
        for node_id, command_id, title in session.execute(
            select(Node.id, Node.playing_command_id, Broadcast.title)
            .join(Command, Command.id == Node.playing_command_id)
            .join(Broadcast, Broadcast.id == Command.broadcast_id).where(Node.playing_command_id.in_(commands))
        ):
            if (node_id, command_id) not in ended:
                playing.setdefault(node_id, title)
    views = {}
    for node in nodes:
        if not node.online or node.silent_since is not None:
            views[node.id] = NodeView(node, "offline", "mất kết nối")
        elif node.id in playing:
            views[node.id] = NodeView(node, "playing", "đang phát", playing[node.id])
        else:
            views[node.id] = NodeView(node, "online", "trực tuyến")
    return views


@dataclass
class ZoneDay:
    zone_id: str
    name: str
    nodes: list[NodeView]
    rest: list[dict[str, object]] = field(default_factory=list)


def _today_rest(session: Session, request: Request, zones: list[Zone],
               statuses: dict[str, tuple[str, str]]) -> dict[str, list[dict[str, object]]]:
    """Per zone, the occurrences still to come today, flagged when their content is not approved."""
    tz = request.app.state.service.settings.tz
    now = utcnow()
    end = dt.datetime.combine(local_today(tz) + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.UTC)
    out: dict[str, list[dict[str, object]]] = {}
    for zone in zones:
        items = []
        for occ in queries.upcoming(session, tz, now, 1, zone.id):
            if occ.at >= end:
                continue
            pending = [statuses[b][1] for b in occ.bulletins
                       if b in statuses and statuses[b][0] != BulletinStatus.APPROVED]
            items.append({"at": occ.at, "name": occ.slot_name, "slot_id": occ.slot_id, "pending": pending})
        out[zone.id] = items
    return out


@router.get("/")
def home(request: Request, session: SessionDep, settings: SettingsDep, _user: Reader) -> Response:
    zones = queries.zones(session)
    views = node_views(session, [n for z in zones for n in z.nodes])
    statuses = {b.id: (b.status, b.title) for b in session.scalars(select(Bulletin))}
    per_zone = [ZoneDay(z.id, z.name, [views[n.id] for n in z.nodes]) for z in zones]
    rest = _today_rest(session, request, zones, statuses)
    for day in per_zone:
        day.rest = rest[day.zone_id]
    on_air = list(session.scalars(select(Broadcast).options(selectinload(Broadcast.deliveries))
                                  .where(Broadcast.status.in_(LIVE)).order_by(Broadcast.scheduled_at.desc())))
    recent = queries.broadcasts(session, limit=8)
    since = utcnow() - dt.timedelta(days=2)
    alerts = list(session.scalars(select(Alert).where(Alert.resolved.is_(False), Alert.at >= since)
                                  .order_by(Alert.at.desc()).limit(8)))
    lost = [v for v in views.values() if v.state == "offline"]
    waiting = list(session.scalars(select(Bulletin).where(Bulletin.status == BulletinStatus.SUBMITTED)
                                   .order_by(Bulletin.submitted_at)))
    pending_slots = list({f"{item['slot_id']}@{item['at']}": item
                          for day in per_zone for item in day.rest if item["pending"]}.values())
    return render(request, "home.html", {
        "active": "home", "zones": per_zone, "on_air": on_air, "recent": recent, "alerts": alerts,
        "alert_vi": ALERT_VI, "lost": lost, "waiting": waiting, "pending_slots": pending_slots,
        "finished": {b.id: sum(1 for d in b.deliveries if d.state == DeliveryState.FINISHED) for b in on_air + recent},
        "now": utcnow(), "today": local_today(settings.tz),
    })


@router.get("/cum-loa")
def nodes_page(request: Request, session: SessionDep, _user: Reader) -> Response:
    zones = queries.zones(session)
    views = node_views(session, [n for z in zones for n in z.nodes])
    counts = {s: sum(1 for v in views.values() if v.state == s) for s in ("playing", "online", "offline")}
    return render(request, "nodes.html", {"active": "nodes", "zones": zones, "views": views, "counts": counts})


@router.get("/cum-loa/{node_id}")
def node_page(node_id: str, request: Request, session: SessionDep, _user: Reader) -> Response:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("cụm loa", node_id)
    view = node_views(session, [node])[node.id]
    history = session.execute(
        select(Delivery, Broadcast).join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(Delivery.node_id == node_id).order_by(Delivery.issued_at.desc()).limit(30)
    ).all()
    return render(request, "node.html", {"active": "nodes", "node": node, "view": view, "zone": node.zone,
                                         "history": history})


@router.get("/phat/{broadcast_id}")
def broadcast_page(broadcast_id: int, request: Request, session: SessionDep, _user: Reader) -> Response:
    """One broadcast, each cluster's state updated live by /static/app.js (polling the JSON API)."""
    row = session.scalars(select(Broadcast).options(selectinload(Broadcast.deliveries))
                          .where(Broadcast.id == broadcast_id)).one_or_none()
    if row is None:
        raise NotFound("lượt phát", broadcast_id)
    nodes = {n.id: n for n in session.scalars(select(Node).options(selectinload(Node.zone)))}
    deliveries = sorted(row.deliveries, key=lambda d: (nodes[d.node_id].zone_id if d.node_id in nodes else "",
                                                       d.node_id, d.part))
    labels = json.dumps({"delivery": DELIVERY_VI, "broadcast": BROADCAST_VI}, ensure_ascii=False)
    return render(request, "broadcast.html", {
        "active": "home", "b": row, "deliveries": deliveries, "nodes": nodes, "labels": labels,
        "live": row.status in LIVE,
        "finished": sum(1 for d in row.deliveries if d.state == DeliveryState.FINISHED),
    })
