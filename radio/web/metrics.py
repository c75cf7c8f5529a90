"""``GET /metrics`` in the Prometheus text format, with the official ``prometheus_client``.

Two kinds of numbers:

* **from the database, at scrape time** (so every instance behind the proxy reports the same truth):
  broadcasts by status, deliveries of the last 24 hours by state (the table grows by millions of rows a
  year; every query here is indexed), nodes online / silent / registered, and the outbox depth;
* **from this process**: node messages the recorder took off MQTT, dropped and still queued, events by
  type, outbox resends, MQTT connection state, and two histograms fed by hooks the service calls —
  :func:`observe_fire_lag` (scheduler: actual − planned fire instant) and :func:`observe_audio_prep`
  (time to make a broadcast's audio, cache hits included).

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (tests build many apps in one
process); the two histograms are process-wide objects registered in each app's registry, as a process
runs one service in production. The endpoint needs no login, like most exporters: expose it only to the
monitoring network (docs/deploy.md).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from radio.models import Broadcast, BroadcastStatus, Command, Delivery, DeliveryState, Node, utcnow

if TYPE_CHECKING:
    from radio.service import Service

router = APIRouter(tags=["ops"])

# Fire lag: APScheduler wakes within milliseconds; anything past a second is a stall worth seeing.
FIRE_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Audio: a cache hit takes milliseconds, a cold 1,000-word bulletin about 2.5 s on a small machine.
DELIVERY_WINDOW = dt.timedelta(hours=24)
AUDIO_PREP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

FIRE_LAG = Histogram("radio_scheduler_fire_lag_seconds",
                     "Scheduler firing lag: actual fire instant minus the occurrence's planned instant",
                     buckets=FIRE_LAG_BUCKETS, registry=None)
AUDIO_PREP = Histogram("radio_audio_preparation_seconds",
                       "Time to prepare a broadcast's audio (speech, processing, MP3), by cache outcome",
                       labelnames=["cached"], buckets=AUDIO_PREP_BUCKETS, registry=None)


def observe_fire_lag(seconds: float) -> None:
    """Record one slot firing: ``seconds`` = actual − planned instant (negative values count as 0)."""
    FIRE_LAG.observe(max(0.0, seconds))


def observe_audio_prep(seconds: float, *, cached: bool = False) -> None:
    """Record the preparation time of one broadcast's audio (``cached``: answered from the audio cache)."""
    AUDIO_PREP.labels(cached="true" if cached else "false").observe(max(0.0, seconds))


@contextmanager
def timed_audio_prep() -> Iterator[dict[str, bool]]:
    """``with timed_audio_prep() as t: ...; t["cached"] = audio.cached`` records the block's duration."""
    outcome = {"cached": False}
    start = time.perf_counter()
    try:
        yield outcome
    finally:
        observe_audio_prep(time.perf_counter() - start, cached=outcome["cached"])


class DatabaseCollector(Collector):
    """Gauges read from the database on every scrape, and the service's in-memory counters."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        yield from self._database()
        yield from self._process()

    def _database(self) -> Iterator[Metric]:
        now = utcnow()
        live = select(Command.id).where(Command.valid_until > now)  # few rows: commands of the last minutes
        recent = select(Broadcast.id).where(Broadcast.scheduled_at >= now - DELIVERY_WINDOW)
        with self.service.factory() as session:
            by_status = dict(session.execute(
                select(Broadcast.status, func.count()).group_by(Broadcast.status)).all())
            # Deliveries grow by millions a year: count those of recent broadcasts (indexed), not the whole table.
            by_state = dict(session.execute(
                select(Delivery.state, func.count()).where(Delivery.broadcast_id.in_(recent))
                .group_by(Delivery.state)).all())
            nodes = dict(session.execute(select(Node.online, func.count()).group_by(Node.online)).all())
            silent = session.scalar(select(func.count()).select_from(Node).where(
                Node.online.is_(True), Node.silent_since.is_not(None))) or 0
            # Outbox depth: live commands some node has not answered yet (the outbox resends these).
            depth, waiting = session.execute(
                select(func.count(func.distinct(Delivery.command_id)), func.count())
                .where(Delivery.command_id.in_(live), Delivery.state == DeliveryState.ISSUED)).one()
            unpublished = session.scalar(select(func.count()).select_from(Command).where(
                Command.published_at.is_(None), Command.valid_until > now)) or 0

        g = GaugeMetricFamily("radio_broadcasts", "Broadcasts in the database by status (outcome)",
                              labels=["status"])
        for status in BroadcastStatus:
            g.add_metric([status.value], by_status.get(status.value, 0))
        yield g
        g = GaugeMetricFamily("radio_deliveries", "Per-node deliveries of the broadcasts scheduled in the last 24 hours, "
                              "by state", labels=["state"])
        for state in DeliveryState:
            g.add_metric([state.value], by_state.get(state.value, 0))
        yield g
        online = int(nodes.get(True, 0))
        yield GaugeMetricFamily("radio_nodes_online", "Loudspeaker nodes whose last state says online", value=online)
        yield GaugeMetricFamily("radio_nodes", "Registered loudspeaker nodes", value=online + int(nodes.get(False, 0)))
        yield GaugeMetricFamily("radio_nodes_silent", "Nodes online but silent past the heartbeat limit", value=silent)
        yield GaugeMetricFamily("radio_outbox_depth", "Live commands not yet answered by every node they address",
                                value=depth)
        yield GaugeMetricFamily("radio_outbox_waiting_deliveries",
                                "Deliveries of live commands still unanswered (state issued)", value=waiting)
        yield GaugeMetricFamily("radio_outbox_unpublished", "Live commands stored but never published",
                                value=unpublished)

    def _process(self) -> Iterator[Metric]:
        svc = self.service
        rec = svc.recorder
        c = CounterMetricFamily("radio_node_messages", "Node messages taken off MQTT by the recorder")
        c.add_metric([], rec.received)
        yield c
        c = CounterMetricFamily("radio_node_messages_dropped", "Node messages dropped as invalid or unknown")
        c.add_metric([], rec.dropped)
        yield c
        c = CounterMetricFamily("radio_node_events", "Node execution events recorded, by event (repeats included)",
                                labels=["event"])
        for event, n in sorted(dict(rec.events).items()):
            c.add_metric([event], n)
        yield c
        yield GaugeMetricFamily("radio_recorder_queue", "Node messages received but not yet written",
                                value=rec.queue.qsize())
        outbox = svc.outbox
        if outbox is not None:
            for name, value, doc in (("radio_outbox_resent", outbox.totals.resent, "Commands resent to single nodes"),
                                     ("radio_outbox_expired", outbox.totals.expired,
                                      "Deliveries closed unanswered when their command expired"),
                                     ("radio_outbox_republished", outbox.totals.published,
                                      "Stored commands published late by the outbox")):
                c = CounterMetricFamily(name, doc)
                c.add_metric([], value)
                yield c
        c = CounterMetricFamily("radio_clock_requests_answered", "Node clock-sync requests answered")
        c.add_metric([], svc.clock.answered)
        yield c
        yield GaugeMetricFamily("radio_mqtt_connected", "1 while the service's MQTT connection is up",
                                value=1 if svc.mqtt is not None and svc.mqtt.connected else 0)


_lock = threading.Lock()


def registry_for(request: Request) -> CollectorRegistry:
    """The app's own registry, made on first use."""
    state = request.app.state
    registry: CollectorRegistry | None = getattr(state, "metrics_registry", None)
    if registry is None:
        with _lock:
            registry = getattr(state, "metrics_registry", None)
            if registry is None:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(DatabaseCollector(state.service))
                registry.register(FIRE_LAG)
                registry.register(AUDIO_PREP)
                state.metrics_registry = registry
    return registry


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus scrape endpoint."""
    return Response(generate_latest(registry_for(request)), media_type=CONTENT_TYPE_LATEST)
