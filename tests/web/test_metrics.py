"""``/metrics``: Prometheus text with database gauges, the service's counters and the two timing histograms."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from radio.db import migrate, transaction
from radio.dispatch import topics
from radio.models import Broadcast, BroadcastStatus, Command, Delivery, DeliveryState, Node, Zone, utcnow
from radio.service import Service
from radio.settings import Settings
from radio.web import metrics
from radio.web.app import create_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def make_app(service: Service) -> FastAPI:
    """The service's app (it carries the metrics router)."""
    app = create_app(service, manage=False)
    return app


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def seed(service: Service) -> None:
    """Three nodes (two online), two broadcasts, and one live command two nodes have not answered yet."""
    migrate(service.engine)
    now = utcnow()
    with transaction(service.factory) as s:
        s.add(Zone(id="tdp-1", name="TDP 1"))
        s.add_all([Node(id="n1", zone_id="tdp-1", name="n1", online=True),
                   Node(id="n2", zone_id="tdp-1", name="n2", online=True),
                   Node(id="n3", zone_id="tdp-1", name="n3", online=False)])
        s.flush()
        done = Broadcast(occurrence_key="a", kind="manual", title="a", scheduled_at=now, status=BroadcastStatus.COMPLETED)
        live = Broadcast(occurrence_key="b", kind="manual", title="b", scheduled_at=now, status=BroadcastStatus.ON_AIR)
        s.add_all([done, live])
        s.flush()
        s.add_all([Command(id="old", broadcast_id=done.id, topic="t", payload={}, valid_until=now - dt.timedelta(hours=1),
                           published_at=now),
                   Command(id="new", broadcast_id=live.id, topic="t", payload={}, valid_until=now + dt.timedelta(hours=1),
                           published_at=now),
                   Command(id="unsent", broadcast_id=live.id, topic="t", payload={},
                           valid_until=now + dt.timedelta(hours=1))])
        s.add_all([Delivery(broadcast_id=done.id, node_id="n1", command_id="old", state=DeliveryState.FINISHED),
                   Delivery(broadcast_id=live.id, node_id="n1", command_id="new", state=DeliveryState.RECEIVED),
                   Delivery(broadcast_id=live.id, node_id="n2", command_id="new", state=DeliveryState.ISSUED),
                   Delivery(broadcast_id=live.id, node_id="n3", command_id="new", state=DeliveryState.ISSUED)])


@pytest.fixture
def service(make_settings: Callable[..., Settings], db_url: str) -> Iterator[Service]:
    service = Service(make_settings(database_url=db_url))
    seed(service)
    yield service
    service.engine.dispose()


def test_database_gauges_count_broadcasts_deliveries_nodes_and_the_outbox(service: Service) -> None:
    """Broadcasts by status, deliveries by state, nodes online and the outbox depth come from the database."""
    with TestClient(make_app(service)) as client:
        got = scrape(client)
    assert got[("radio_broadcasts", (("status", "completed"),))] == 1
    assert got[("radio_broadcasts", (("status", "on_air"),))] == 1
    assert got[("radio_broadcasts", (("status", "missed"),))] == 0
    assert got[("radio_deliveries", (("state", "issued"),))] == 2
    assert got[("radio_deliveries", (("state", "received"),))] == 1
    assert got[("radio_deliveries", (("state", "finished"),))] == 1
    assert got[("radio_nodes_online", ())] == 2 and got[("radio_nodes", ())] == 3
    assert got[("radio_outbox_depth", ())] == 1  # "new": two nodes have not answered; "old" has expired
    assert got[("radio_outbox_waiting_deliveries", ())] == 2
    assert got[("radio_outbox_unpublished", ())] == 1
    assert got[("radio_mqtt_connected", ())] == 0  # the app's service is not started here


def test_recorder_counters_follow_what_the_service_took_off_mqtt(service: Service) -> None:
    """Messages the recorder processed and dropped, and events by type, appear as counters."""
    site = service.settings.site_id
    event = {"v": 1, "node": "n2", "command_id": "new", "event": "received", "at": utcnow().isoformat()}
    service.recorder.process([(topics.event(site, "n2"), json.dumps(event).encode()),
                              (topics.event(site, "n2"), b"not json")])
    with TestClient(make_app(service)) as client:
        got = scrape(client)
    assert got[("radio_node_messages_total", ())] == 2
    assert got[("radio_node_messages_dropped_total", ())] == 1
    assert got[("radio_node_events_total", (("event", "received"),))] == 1
    assert got[("radio_recorder_queue", ())] == 0
    assert got[("radio_deliveries", (("state", "issued"),))] == 1


def test_fire_lag_and_audio_preparation_hooks_feed_histograms(service: Service) -> None:
    """observe_fire_lag and observe_audio_prep land in bucketed histograms on the next scrape."""
    with TestClient(make_app(service)) as client:
        before = scrape(client)
        metrics.observe_fire_lag(0.003)
        metrics.observe_fire_lag(0.2)
        metrics.observe_audio_prep(1.7)
        with metrics.timed_audio_prep() as outcome:
            outcome["cached"] = True
        after = scrape(client)

    def delta(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after[key] - before.get(key, 0.0)

    assert delta("radio_scheduler_fire_lag_seconds_count") == 2
    assert delta("radio_scheduler_fire_lag_seconds_bucket", ("le", "0.005")) == 1
    assert delta("radio_scheduler_fire_lag_seconds_bucket", ("le", "0.25")) == 2
    assert delta("radio_scheduler_fire_lag_seconds_sum") == pytest.approx(0.203)
    assert delta("radio_audio_preparation_seconds_count", ("cached", "false")) == 1
    assert delta("radio_audio_preparation_seconds_bucket", ("cached", "false"), ("le", "1.0")) == 0
    assert delta("radio_audio_preparation_seconds_bucket", ("cached", "false"), ("le", "2.5")) == 1
    assert delta("radio_audio_preparation_seconds_count", ("cached", "true")) == 1


def test_each_app_has_its_own_registry(service: Service, make_settings: Callable[..., Settings],
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two apps in one process report their own databases and never clash over metric names."""
    other = Service(make_settings(data_dir=tmp_path_factory.mktemp("other")))
    migrate(other.engine)
    try:
        with TestClient(make_app(service)) as a, TestClient(make_app(other)) as b:
            assert scrape(a)[("radio_nodes", ())] == 3
            assert scrape(b)[("radio_nodes", ())] == 0
            assert scrape(a)[("radio_nodes", ())] == 3  # a second scrape reuses the app's registry
    finally:
        other.engine.dispose()
