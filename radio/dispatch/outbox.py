"""The service's outbox: every command is stored before it is published, and resent until answered or expired.

* ``publish`` sends a stored command on its own topic (site, zone or node) and marks it published.
* A worker thread wakes every ``tick_s``, after each (re)connect to the broker and whenever a node says it
  is online, and then:

  1. publishes commands stored but never published (the service died between the two);
  2. resends a command on ``cmd/node/<node>`` to each node whose delivery is still open:
     ``issued`` (never answered) after ``resend_s``; answered but not final once the audio should
     have ended (on that node: see ``_expected_end``); and at once to every open
     delivery after a reconnect or when that node comes back online. The node deduplicates on the command
     id and answers a repeat with its latest event, so a resend can never make anything play twice; it only
     recovers lost commands and lost answers;
  3. marks deliveries of expired commands that the node never answered: ``missed`` with reason
     ``missed: offline`` if the node is offline, ``expired`` (no answer) if it is online.

Resends must never feed on themselves (every resend makes a node answer, and answers are what the recorder
must write). So:

* while the recorder has a backlog (``backlog()`` > ``backlog_limit``) nothing is resent: the table is behind
  what the nodes said, and "still issued" means nothing yet. Signals (reconnect, node back) wait too;
* a delivery is resent again only after ``resend_s``, doubling with each unanswered resend up to
  ``resend_backoff`` × ``resend_s``; the first time not before halfway to ``start_at`` (a long lead means a big
  fan-out, whose answers come back as slowly as its downloads go out);
* at most ``max_resends`` per-node resends per tick, the longest-waiting first; the rest wait a tick;
* when many nodes of one command are due (≥ ``group_min`` and ≥ ``group_share`` of its targets), the command is
  sent once more on its own (site or zone) topic instead of once per node; only with a ``backlog`` callable,
  because a group resend makes every target answer.

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

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from radio.db import transaction
from radio.dispatch import topics
from radio.dispatch.mqtt import MqttClient
from radio.models import FINAL_DELIVERY_STATES, Broadcast, Command, Delivery, DeliveryState, Node, utcnow

log = logging.getLogger(__name__)
OPEN_STATES = [s.value for s in DeliveryState if s not in FINAL_DELIVERY_STATES]
MISSED_OFFLINE = "missed: offline"
EXPIRED_NO_ANSWER = "expired: no answer from the node before valid_until"
Key = tuple[str, str]  # (command id, node id)


@dataclass
class TickReport:
    published: int = 0
    resent: int = 0  # per-node resends
    grouped: int = 0  # resends on a command's own (site or zone) topic
    held: int = 0  # resends due but held back: the recorder has a backlog, or the per-tick cap was reached
    expired: int = 0
    nodes: set[str] = field(default_factory=set)


@dataclass
class _Sent:
    at: float  # monotonic time of the last send
    count: int  # resends so far (the first publish is not one)
    state: str  # the delivery's state when sent: an answer since then resets the back-off


def payload_bytes(command: Command) -> bytes:
    return json.dumps(command.payload, ensure_ascii=False).encode()


def _instant(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _expected_end(payload: dict[str, object], began: dt.datetime | None = None,
                  received: dt.datetime | None = None) -> dt.datetime | None:
    """When the audio (or relay) of a command should be over on a node, from its stored payload: ``duration_s``
    after ``start_at``, or after the node's own start if later. A node that reported ready or started late
    (``began``) starts late; one that only said ``received`` may take the whole lead to fetch from then on."""
    start, issued = _instant(payload.get("start_at")), _instant(payload.get("issued_at"))
    media = payload.get("audio") or payload.get("stream")
    if start is None or not isinstance(media, dict):
        return None
    if began is None and received is not None and issued is not None:
        began = received + (start - issued)
    try:
        return max(start, began or start) + dt.timedelta(seconds=float(media.get("duration_s", 0)))
    except (TypeError, ValueError):
        return None


def _half_lead_s(payload: dict[str, object], published: dt.datetime) -> float:
    """Half the time from publishing to ``start_at`` (0 without one).

    The service makes the lead as long as its fan-out's downloads need (docs/protocol.md, *Lead time*), and
    thousands of nodes' answers take as long to come back through the broker and the recorder: a node silent
    for 5 s of a 58 s lead is almost always one whose answer is on its way. Halfway, a node that really lost the
    command still has half the lead to fetch the audio after the resend.
    """
    start = _instant(payload.get("start_at"))
    return 0.0 if start is None else max(0.0, (start - published).total_seconds() / 2)


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
                 housekeeping: Sequence[Callable[[], object]] = (), housekeeping_s: float = 10.0,
                 backlog: Callable[[], int] | None = None, backlog_limit: int = 100, max_resends: int = 100,
                 resend_backoff: float = 8.0, group_min: int = 20, group_share: float = 0.5,
                 expire_window_s: float = 3600.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.factory = factory
        self.mqtt = mqtt
        self.site = site
        self.resend_s = resend_s
        self.tick_s = tick_s
        self.end_grace_s = end_grace_s
        self.settle_timeout_s = settle_timeout_s
        self.housekeeping = list(housekeeping)
        self.housekeeping_s = housekeeping_s
        # Node messages received but not yet written by the recorder (e.g. ``recorder.queue.qsize``). Without it
        # the outbox cannot tell a lost answer from one still queued: it then relies on back-off and the cap alone.
        self.backlog = backlog
        self.backlog_limit = backlog_limit
        self.max_resends = max_resends
        self.resend_backoff = resend_backoff
        self.group_min = group_min
        self.group_share = group_share
        self.expire_window_s = expire_window_s  # expired commands older than this were closed by earlier ticks
        self.monotonic = monotonic
        self.totals = TickReport()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reconnected = False
        self._nodes_back: set[str] = set()
        self._forced: set[Key] = set()  # due at once (reconnect, node back), kept until sent
        self._sent: dict[Key, _Sent] = {}
        self._attempts: dict[str, int] = {}  # resends not yet added to commands.attempts
        self._swept = False  # the first expiry pass looks at all history, later ones only at the window
        self._held_since: float | None = None  # since when resends wait for the recorder
        self._caught_up_at = float("-inf")  # when the recorder's backlog last fell to the limit
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

    def _keep_signals(self, reconnected: bool, back: set[str]) -> None:
        with self._lock:
            self._reconnected |= reconnected
            self._nodes_back |= back

    def recorder_behind(self, mono: float) -> int | None:
        """How many node messages the recorder still has to write, if resends must wait for it; else None.

        Resends wait while the backlog is over the limit, and for ``resend_s`` after it fell back: the recorder
        writes in batches, and the batch it is writing does not show in its queue.
        """
        if self.backlog is None:
            return None
        try:
            queued = int(self.backlog())
        except Exception:  # a broken probe must not stop resends for good
            log.exception("outbox: the recorder backlog probe failed")
            return None
        if queued > self.backlog_limit:
            self._caught_up_at = float("inf")
            return queued
        if self._caught_up_at == float("inf"):
            self._caught_up_at = mono
        return queued if mono - self._caught_up_at < self.resend_s else None

    def tick(self) -> TickReport:
        with self._lock:
            reconnected, self._reconnected = self._reconnected, False
            back, self._nodes_back = self._nodes_back, set()
        report = TickReport()
        if not self.mqtt.connected:
            self._keep_signals(reconnected, back)  # for when we are connected again
            self._expire(report)
            return report
        now = utcnow()
        mono = self.monotonic()
        stale = now - dt.timedelta(seconds=self.resend_s)
        with self.factory() as session:
            unpublished = list(session.scalars(select(Command).where(
                Command.published_at.is_(None), Command.valid_until > now, Command.created_at < stale)))
        for command in unpublished:
            log.warning("command %s was stored but never published; publishing it now", command.id)
            self.publish(command)
            report.published += 1
        behind = self.recorder_behind(mono)
        if behind is not None:
            self._keep_signals(reconnected, back)
            if self._held_since is None:
                self._held_since = mono
                log.info("outbox: the recorder has %d node messages to write; resends wait for it", behind)
            elif mono - self._held_since > 60:
                log.warning("outbox: resends held for %.0f s, the recorder still has %d node messages to write",
                            mono - self._held_since, behind)
                self._held_since = mono
            with self.factory() as session:
                commands = {c.id: c for c in session.scalars(select(Command).where(
                    Command.valid_until > now, Command.published_at.is_not(None)))}
        else:
            self._held_since = None
            commands = self._resend(now, mono, reconnected, back, report)
        self._expire(report)
        self._forget(commands)
        for name in ("published", "resent", "grouped", "held", "expired"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(report, name))
        return report

    def _resend(self, now: dt.datetime, mono: float, reconnected: bool, back: set[str],
                report: TickReport) -> dict[str, Command]:
        """Resend what is due (see the module's doc); returns the live commands."""
        with self.factory() as session:
            commands = {c.id: c for c in session.scalars(select(Command).where(
                Command.valid_until > now, Command.published_at.is_not(None)))}
            rows = session.execute(
                select(Delivery.command_id, Delivery.node_id, Delivery.state, Node.online,
                       func.coalesce(Delivery.started_at, Delivery.ready_at), Delivery.received_at)
                .join(Node, Node.id == Delivery.node_id)
                .where(Delivery.command_id.in_(commands), Delivery.state.in_(OPEN_STATES))
            ).all() if commands else []
            targets: dict[str, int] = dict(session.execute(  # type: ignore[arg-type]
                select(Delivery.command_id, func.count()).where(Delivery.command_id.in_(commands))
                .group_by(Delivery.command_id)).all()) if commands else {}
        states = {(c, n): str(s) for c, n, s, *_ in rows}
        for key in [k for k in self._forced if k not in states]:  # answered finally or expired meanwhile
            self._forced.discard(key)
        if reconnected:
            self._forced.update(states)
        if back:
            self._forced.update(k for k in states if k[1] in back)
        due: list[tuple[float, Key]] = []  # (how long overdue, key)
        for command_id, node_id, state, online, began, received in rows:
            command = commands[command_id]
            key = (command_id, node_id)
            sent = self._sent.get(key)
            if sent is not None and sent.state != state:  # it answered since: the back-off starts over
                sent = self._sent[key] = _Sent(sent.at, 0, str(state))
            if key in self._forced:
                due.append((float("inf"), key))
                continue
            if not online:
                continue
            if sent is None:
                published = command.published_at or now
                waited = (now - published).total_seconds()
                interval = max(self.resend_s, _half_lead_s(command.payload, published))
            else:
                waited = mono - sent.at
                interval = self.resend_s * min(2.0 ** sent.count, self.resend_backoff)
            if waited < interval:
                continue
            if state != DeliveryState.ISSUED:  # answered, not final: its final answer may have been lost
                end = _expected_end(command.payload, began, received)
                if end is None or now <= end + dt.timedelta(seconds=self.end_grace_s):
                    continue
            due.append((waited - interval, key))
        if not due:
            return commands
        due.sort(reverse=True)
        by_command: dict[str, list[Key]] = {}
        for _, key in due:
            by_command.setdefault(key[0], []).append(key)
        sent_keys: list[Key] = []
        if self.backlog is not None:  # the table is current: many missing nodes are really missing
            for command_id, keys in by_command.items():
                command = commands[command_id]
                many = len(keys) >= self.group_min and len(keys) >= self.group_share * targets.get(command_id, 0)
                if many and command.topic != topics.cmd_node(self.site, keys[0][1]):
                    self.mqtt.publish(command.topic, payload_bytes(command), qos=1)
                    report.grouped += 1
                    sent_keys.extend(keys)
            grouped = set(sent_keys)
            due = [d for d in due if d[1] not in grouped]
        for _, key in due:
            if report.resent >= self.max_resends:
                report.held += 1
                continue
            command_id, node_id = key
            self.mqtt.publish(topics.cmd_node(self.site, node_id), payload_bytes(commands[command_id]), qos=1)
            report.resent += 1
            sent_keys.append(key)
        for key in sent_keys:
            previous = self._sent.get(key)
            self._sent[key] = _Sent(mono, previous.count + 1 if previous else 1, states[key])
            self._forced.discard(key)
            report.nodes.add(key[1])
            self._attempts[key[0]] = self._attempts.get(key[0], 0) + 1
        log.info("outbox: resent %d command(s) to %d node(s) (%d on group topics)%s", len(sent_keys),
                 len(report.nodes), report.grouped, f", {report.held} wait for the next tick" if report.held else "")
        self._count_attempts()
        return commands

    def _count_attempts(self) -> None:
        """Add the resends to ``commands.attempts``; a busy database only delays the count (it is for people)."""
        if not self._attempts:
            return
        try:
            with transaction(self.factory) as session:
                for command_id, n in self._attempts.items():
                    session.execute(update(Command).where(Command.id == command_id)
                                    .values(attempts=Command.attempts + n))
        except OperationalError as exc:
            log.info("outbox: resend counts wait for a busy database (%s)", exc.orig)
            return
        self._attempts.clear()

    def _expire(self, report: TickReport) -> None:
        """Close deliveries of expired commands that the node never answered.

        Only commands that expired within ``expire_window_s`` are looked at (every tick closes what expired since
        the previous one); the first pass after start-up sweeps all history, for a service that was down long.
        """
        from radio.broadcast import settle  # imported here so broadcast.py may import this module freely

        now = utcnow()
        query = (select(Delivery, Node.online).join(Command, Command.id == Delivery.command_id)
                 .join(Node, Node.id == Delivery.node_id)
                 .where(Command.valid_until <= now, Delivery.state == DeliveryState.ISSUED))
        if self._swept:
            query = query.where(Command.valid_until > now - dt.timedelta(seconds=self.expire_window_s))
        with transaction(self.factory) as session:
            rows = session.execute(query).all()
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
        self._swept = True
        if report.expired:
            log.info("outbox: %d delivery(ies) expired unanswered", report.expired)

    def _forget(self, live: dict[str, Command]) -> None:
        for key in [k for k in self._sent if k[0] not in live]:
            del self._sent[key]
        self._forced = {k for k in self._forced if k[0] in live}
