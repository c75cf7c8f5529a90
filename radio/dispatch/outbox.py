"""The service's outbox: every command is stored before it is published, and resent until answered or expired.

* ``publish`` sends a stored command on its own topic (site, zone or node) and marks it published.
* A worker thread wakes every ``tick_s``, after each (re)connect to the broker and whenever a node says it
  is online, and then:

  1. publishes commands stored but never published (the service died between the two);
  2. resends a command on ``cmd/node/<node>`` to each node whose delivery is still open:
     ``issued`` (never answered) after ``resend_s``; answered but not final once the audio should
     have ended; and at once to every open delivery after a reconnect or when that node comes back
     online. The node deduplicates on the command id and answers a repeat with its latest event, so
     a resend can never make anything play twice; it only recovers lost commands and lost answers;
  3. marks deliveries of expired commands that the node never answered: ``missed`` with reason
     ``missed: offline`` if the node is offline, ``expired`` (no answer) if it is online.

Nothing lives only in memory: after a restart (even SIGKILL) the tables say what is still open.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.db import transaction
from radio.dispatch import topics
from radio.dispatch.mqtt import MqttClient
from radio.models import FINAL_DELIVERY_STATES, Broadcast, Command, Delivery, DeliveryState, Node, utcnow

log = logging.getLogger(__name__)
OPEN_STATES = [s.value for s in DeliveryState if s not in FINAL_DELIVERY_STATES]
MISSED_OFFLINE = "missed: offline"
EXPIRED_NO_ANSWER = "expired: no answer from the node before valid_until"


@dataclass
class TickReport:
    published: int = 0
    resent: int = 0
    expired: int = 0
    nodes: set[str] = field(default_factory=set)


def payload_bytes(command: Command) -> bytes:
    return json.dumps(command.payload, ensure_ascii=False).encode()


def _expected_end(payload: dict[str, object]) -> dt.datetime | None:
    """When the audio (or relay) of a command should be over, from its stored payload."""
    start = payload.get("start_at")
    media = payload.get("audio") or payload.get("stream")
    if not isinstance(start, str) or not isinstance(media, dict):
        return None
    try:
        return dt.datetime.fromisoformat(start.replace("Z", "+00:00")) + dt.timedelta(
            seconds=float(media.get("duration_s", 0)))
    except (TypeError, ValueError):
        return None


def publish_command(factory: sessionmaker[Session], mqtt: MqttClient, command: Command) -> None:
    """Send a stored command on its own topic and mark it published (paho queues it while disconnected)."""
    mqtt.publish(command.topic, payload_bytes(command), qos=1)
    with transaction(factory) as session:
        row = session.get_one(Command, command.id)
        row.published_at = row.published_at or utcnow()
        row.attempts += 1


class Outbox:
    def __init__(self, factory: sessionmaker[Session], mqtt: MqttClient, *, site: str, resend_s: float = 5.0,
                 tick_s: float = 1.0, end_grace_s: float = 10.0, settle_timeout_s: float = 60.0,
                 housekeeping: Sequence[Callable[[], object]] = (), housekeeping_s: float = 10.0) -> None:
        self.factory = factory
        self.mqtt = mqtt
        self.site = site
        self.resend_s = resend_s
        self.tick_s = tick_s
        self.end_grace_s = end_grace_s
        self.settle_timeout_s = settle_timeout_s
        self.housekeeping = list(housekeeping)
        self.housekeeping_s = housekeeping_s
        self.totals = TickReport()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reconnected = False
        self._nodes_back: set[str] = set()
        self._sent: dict[tuple[str, str], float] = {}  # (command id, node) -> monotonic time of the last send
        self._last_housekeeping = 0.0
        self._thread = threading.Thread(target=self._work, name="outbox", daemon=True)

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    # signals (any thread; paho's callbacks only signal) --------------------------------------------
    def on_connect(self) -> None:
        with self._lock:
            self._reconnected = True
        self._wake.set()

    def node_online(self, node_id: str) -> None:
        with self._lock:
            self._nodes_back.add(node_id)
        self._wake.set()

    # publishing ------------------------------------------------------------------------------------
    def publish(self, command: Command) -> None:
        publish_command(self.factory, self.mqtt, command)

    # the worker ------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # the database may be briefly away; try again next tick
                log.exception("outbox tick failed")
            if self.housekeeping and time.monotonic() - self._last_housekeeping >= self.housekeeping_s:
                self._last_housekeeping = time.monotonic()
                for job in self.housekeeping:
                    try:
                        job()
                    except Exception:
                        log.exception("housekeeping job failed")

    def tick(self) -> TickReport:
        with self._lock:
            reconnected, self._reconnected = self._reconnected, False
            back, self._nodes_back = self._nodes_back, set()
        report = TickReport()
        if not self.mqtt.connected:
            with self._lock:  # keep the signals for when we are connected again
                self._reconnected |= reconnected
                self._nodes_back |= back
            self._expire(report)
            return report
        now = utcnow()
        mono = time.monotonic()
        stale = now - dt.timedelta(seconds=self.resend_s)
        with self.factory() as session:
            unpublished = list(session.scalars(select(Command).where(
                Command.published_at.is_(None), Command.valid_until > now, Command.created_at < stale)))
        for command in unpublished:
            log.warning("command %s was stored but never published; publishing it now", command.id)
            self.publish(command)
            report.published += 1
        with self.factory() as session:
            commands = {c.id: c for c in session.scalars(select(Command).where(
                Command.valid_until > now, Command.published_at.is_not(None)))}
            rows = session.execute(
                select(Delivery.command_id, Delivery.node_id, Delivery.state, Node.online)
                .join(Node, Node.id == Delivery.node_id)
                .where(Delivery.command_id.in_(commands), Delivery.state.in_(OPEN_STATES))
            ).all() if commands else []
        for command_id, node_id, state, online in rows:
            command = commands[command_id]
            key = (command_id, node_id)
            last = self._sent.get(key)
            waited = mono - last if last is not None else (now - (command.published_at or now)).total_seconds()
            if reconnected or node_id in back:
                due = True
            elif not online or waited < self.resend_s:
                due = False
            elif state == DeliveryState.ISSUED:
                due = True
            else:  # answered, not final: its final answer may have been lost
                end = _expected_end(command.payload)
                due = end is not None and now > end + dt.timedelta(seconds=self.end_grace_s)
            if due:
                self.mqtt.publish(topics.cmd_node(self.site, node_id), payload_bytes(command), qos=1)
                self._sent[key] = mono
                report.resent += 1
                report.nodes.add(node_id)
        if report.resent:
            log.info("outbox: resent %d command(s) to %d node(s)", report.resent, len(report.nodes))
            counts: dict[str, int] = {}
            for command_id, node_id, *_ in rows:
                if self._sent.get((command_id, node_id)) == mono:
                    counts[command_id] = counts.get(command_id, 0) + 1
            with transaction(self.factory) as session:
                for command_id, n in counts.items():
                    row = session.get(Command, command_id)
                    if row is not None:
                        row.attempts += n
        self._expire(report)
        self._forget(commands)
        self.totals.published += report.published
        self.totals.resent += report.resent
        self.totals.expired += report.expired
        return report

    def _expire(self, report: TickReport) -> None:
        """Close deliveries of expired commands that the node never answered."""
        from radio.broadcast import settle  # imported here so broadcast.py may import this module freely

        now = utcnow()
        with transaction(self.factory) as session:
            rows = session.execute(
                select(Delivery, Node.online).join(Command, Command.id == Delivery.command_id)
                .join(Node, Node.id == Delivery.node_id)
                .where(Command.valid_until <= now, Delivery.state == DeliveryState.ISSUED)
            ).all()
            touched: set[int] = set()
            for delivery, online in rows:
                if online:
                    delivery.state, delivery.reason = DeliveryState.EXPIRED, EXPIRED_NO_ANSWER
                else:
                    delivery.state, delivery.reason = DeliveryState.MISSED, MISSED_OFFLINE
                touched.add(delivery.broadcast_id)
                report.expired += 1
            for broadcast_id in touched:
                broadcast = session.get(Broadcast, broadcast_id)
                if broadcast is not None:
                    settle(session, broadcast, now, self.settle_timeout_s)
        if report.expired:
            log.info("outbox: %d delivery(ies) expired unanswered", report.expired)

    def _forget(self, live: dict[str, Command]) -> None:
        for key in [k for k in self._sent if k[0] not in live]:
            del self._sent[key]
