"""Turns node events and states from MQTT into as-run rows.

paho's network thread only enqueues; one worker thread drains the queue in batches, so thousands
of nodes answering at once become a few transactions, and a slow database never blocks MQTT.
Bad or forged messages are dropped with a log line and never stop the worker.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import settle
from radio.db import transaction
from radio.dispatch import topics
from radio.dispatch.messages import BadMessage, Event, EventType, Heartbeat, NodeState, parse
from radio.models import Broadcast, BroadcastStatus, Delivery, DeliveryState, Node, utcnow

log = logging.getLogger(__name__)

# Event → (delivery state, timestamp column). Order matters: a state never moves backwards.
TRANSITIONS: dict[EventType, tuple[DeliveryState, str | None]] = {
    EventType.RECEIVED: (DeliveryState.RECEIVED, "received_at"),
    EventType.READY: (DeliveryState.READY, "ready_at"),
    EventType.STARTED: (DeliveryState.PLAYING, "started_at"),
    EventType.FINISHED: (DeliveryState.FINISHED, "finished_at"),
    EventType.FAILED: (DeliveryState.FAILED, "finished_at"),
    EventType.REJECTED: (DeliveryState.REJECTED, None),
    EventType.EXPIRED: (DeliveryState.EXPIRED, None),
}
RANK = {DeliveryState.ISSUED: 0, DeliveryState.RECEIVED: 1, DeliveryState.READY: 2, DeliveryState.PLAYING: 3}


class Recorder:
    def __init__(self, factory: sessionmaker[Session], timeout_s: float,
                 on_change: Callable[[], None] | None = None) -> None:
        self.factory = factory
        self.timeout_s = timeout_s
        self.on_change = on_change
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self.received = 0  # messages taken off MQTT (for tests and metrics)
        self.dropped = 0
        self.pending = 0  # messages held back while the database is unavailable
        self.events: Counter[str] = Counter()  # accepted events by type, duplicates included
        self.heartbeats = 0
        # Called (on this worker's thread, after commit) with each node that says it is online: the outbox
        # resends what that node has not answered yet.
        self.on_node_online: Callable[[str], None] | None = None
        self._thread = threading.Thread(target=self._work, name="recorder", daemon=True)
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # also ends a wait for a database that is gone
        self.queue.put(None)
        self._thread.join(timeout=10)

    def submit(self, topic: str, payload: bytes) -> None:
        """Called on paho's thread: enqueue only."""
        self.queue.put((topic, payload))

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            batch = [item]
            while len(batch) < 1000:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            messages = [m for m in batch if m is not None]
            if messages:
                self._record(messages)
            if None in batch:
                return

    def _record(self, messages: list[tuple[str, bytes]]) -> None:
        """Record a batch; while the database is away, keep it and retry (nothing a node said is lost)."""
        delay = 0.5
        while True:
            counts = (self.received, self.dropped, self.events.copy())
            try:
                self.process(messages)
                self.pending = 0
                return
            except DBAPIError as exc:
                self.received, self.dropped, self.events = counts  # the batch is counted once, when it lands
                self.pending = len(messages)
                reason = type(exc.orig).__name__ if exc.orig else exc
                if self._stopping.is_set():
                    log.error("stopping with the database unavailable: %d node messages not recorded (%s)",
                              len(messages), reason)
                    return
                log.warning("database unavailable, %d node messages wait (%s); retrying in %.1f s",
                            len(messages), reason, delay)
                if self._stopping.wait(delay):
                    continue  # one last try before giving up
                delay = min(delay * 2, 10.0)
            except Exception:  # a bug must not kill the worker; the batch is logged and dropped
                log.exception("could not record %d node messages", len(messages))
                return

    def process(self, messages: list[tuple[str, bytes]]) -> None:
        touched: set[int] = set()
        online: list[str] = []
        with transaction(self.factory) as session:
            for topic, payload in messages:
                self.received += 1
                sender = topics.node_of(topic)
                kind = topics.kind_of(topic)
                try:
                    if kind == "state":
                        if self._state(session, sender, parse(NodeState, payload)):
                            online.append(str(sender))
                    elif kind == "evt":
                        broadcast_id = self._event(session, sender, parse(Event, payload))
                        if broadcast_id is not None:
                            touched.add(broadcast_id)
                    elif kind == "hb":
                        self._heartbeat(session, sender, parse(Heartbeat, payload))
                    else:
                        raise BadMessage("not a node → service topic of protocol v1")
                except BadMessage as exc:
                    self.dropped += 1
                    log.warning("dropped a message on %s: %s", topic, exc)
            now = utcnow()
            for broadcast_id in touched:
                broadcast = session.get(Broadcast, broadcast_id)
                if broadcast is not None:
                    settle(session, broadcast, now, self.timeout_s)
        if self.on_change is not None:
            self.on_change()
        if self.on_node_online is not None:
            for node_id in online:
                self.on_node_online(node_id)

    def _state(self, session: Session, sender: str | None, state: NodeState) -> bool:
        """Apply a node's retained state; True if it says the node is (back) online."""
        if state.node != sender:
            raise BadMessage(f"state for node {state.node!r} published on the topic of {sender!r}")
        node = session.get(Node, state.node)
        if node is None:
            raise BadMessage(f"unknown node {state.node!r}")
        if state.session < node.session:  # a late Last Will of an earlier boot: the node is back already
            return False
        if node.online != state.online or node.session != state.session:
            log.info("Cụm loa %s %s", node.id, "trực tuyến" if state.online else "mất kết nối")
        node.session, node.online = state.session, state.online
        _seen(node)
        return state.online

    def _heartbeat(self, session: Session, sender: str | None, hb: Heartbeat) -> None:
        if hb.node != sender:
            raise BadMessage(f"heartbeat for node {hb.node!r} published on the topic of {sender!r}")
        node = session.get(Node, hb.node)
        if node is None:
            raise BadMessage(f"unknown node {hb.node!r}")
        self.heartbeats += 1
        if hb.session < node.session:  # from an earlier boot, delivered late
            return
        if not node.online or hb.session > node.session:  # a heartbeat proves it is up, even if its state got lost
            node.online, node.session = True, hb.session
        node.volume, node.player = hb.volume, hb.player or None
        node.playing_command_id = hb.playing.command_id if hb.playing else None
        node.link_rtt_ms, node.link_rssi_dbm = hb.link.rtt_ms, hb.link.rssi_dbm
        node.clock_offset_ms = hb.clock_offset_ms
        node.heartbeat_at = utcnow()
        _seen(node)

    def _event(self, session: Session, sender: str | None, event: Event) -> int | None:
        if event.node != sender:
            raise BadMessage(f"event for node {event.node!r} published on the topic of {sender!r}")
        delivery = session.scalars(
            select(Delivery).where(Delivery.command_id == event.command_id, Delivery.node_id == event.node)
        ).one_or_none()
        if delivery is None:
            raise BadMessage(f"unknown command {event.command_id!r} for node {event.node!r}")
        node = session.get(Node, event.node)
        if node is not None:
            _seen(node)
        self.events[event.event.value] += 1
        apply_event(delivery, event)
        if event.event in (EventType.FINISHED, EventType.FAILED):
            log.info("%s: «%s» %s%s", event.node, delivery.broadcast.title,
                     "đã phát xong" if event.event is EventType.FINISHED else "lỗi",
                     f" ({event.played_s:.1f} giây)" if event.played_s is not None else f": {event.reason}")
        return delivery.broadcast_id


def _seen(node: Node) -> None:
    node.last_seen_at = utcnow()
    if node.silent_since is not None:
        log.info("Cụm loa %s hoạt động trở lại", node.id)
        node.silent_since = None


def apply_event(delivery: Delivery, event: Event) -> None:
    """Move a delivery forward; late or repeated events only fill in missing timestamps."""
    state, column = TRANSITIONS[event.event]
    if column and getattr(delivery, column) is None:
        setattr(delivery, column, event.at.astimezone(dt.UTC))
    current = DeliveryState(delivery.state)
    if current.final:
        return
    if state.final or RANK[state] > RANK[current]:
        delivery.state = state
    if state.final:
        delivery.reason = event.reason
        if event.played_s is not None:
            delivery.played_s = event.played_s


def settle_due(factory: sessionmaker[Session], timeout_s: float) -> int:
    """Close broadcasts whose time is up; run periodically. Returns how many were closed."""
    closed = 0
    with transaction(factory) as session:
        now = utcnow()
        for broadcast in session.scalars(select(Broadcast).where(Broadcast.status == BroadcastStatus.ON_AIR)):
            closed += settle(session, broadcast, now, timeout_s)
    return closed


def flag_silent(factory: sessionmaker[Session], after_s: float) -> list[str]:
    """Mark online nodes that have sent nothing for ``after_s`` as silent (``silent_since``); returns them."""
    flagged: list[str] = []
    with transaction(factory) as session:
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=after_s)
        for node in session.scalars(select(Node).where(Node.online.is_(True), Node.silent_since.is_(None),
                                                       Node.last_seen_at < cutoff)):
            node.silent_since = now
            flagged.append(node.id)
            log.warning("Cụm loa %s im lặng: không có tín hiệu từ %s", node.id,
                        node.last_seen_at.isoformat() if node.last_seen_at else "?")
    return flagged
