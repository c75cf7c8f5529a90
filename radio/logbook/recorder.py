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
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import settle
from radio.db import transaction
from radio.dispatch import topics
from radio.dispatch.messages import BadMessage, Event, EventType, NodeState, parse
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
        self._thread = threading.Thread(target=self._work, name="recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
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
                try:
                    self.process(messages)
                except Exception:  # the database may be briefly away; never let the worker die
                    log.exception("could not record %d node messages", len(messages))
            if None in batch:
                return

    def process(self, messages: list[tuple[str, bytes]]) -> None:
        touched: set[int] = set()
        with transaction(self.factory) as session:
            for topic, payload in messages:
                self.received += 1
                sender = topics.node_of(topic)
                try:
                    if "/state/" in topic:
                        self._state(session, sender, parse(NodeState, payload))
                    elif "/evt/" in topic:
                        broadcast_id = self._event(session, sender, parse(Event, payload))
                        if broadcast_id is not None:
                            touched.add(broadcast_id)
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

    def _state(self, session: Session, sender: str | None, state: NodeState) -> None:
        if state.node != sender:
            raise BadMessage(f"state for node {state.node!r} published on the topic of {sender!r}")
        node = session.get(Node, state.node)
        if node is None:
            raise BadMessage(f"unknown node {state.node!r}")
        if state.session < node.session:  # a late Last Will of an earlier boot: the node is back already
            return
        node.session, node.online = state.session, state.online
        node.last_seen_at = utcnow()
        log.info("Cụm loa %s %s", node.id, "trực tuyến" if state.online else "mất kết nối")

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
            node.last_seen_at = utcnow()
        apply_event(delivery, event)
        if event.event in (EventType.FINISHED, EventType.FAILED):
            log.info("%s: «%s» %s%s", event.node, delivery.broadcast.title,
                     "đã phát xong" if event.event is EventType.FINISHED else "lỗi",
                     f" ({event.played_s:.1f} giây)" if event.played_s is not None else f": {event.reason}")
        return delivery.broadcast_id


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
