"""The recorder turns node events into delivery rows: forward-only, forged and unknown events dropped."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from radio.db import make_engine, migrate, session_factory, transaction
from radio.dispatch import topics
from radio.logbook.recorder import Recorder, settle_due
from radio.models import Broadcast, BroadcastStatus, Delivery, DeliveryState, Node, Zone, utcnow

SITE = "tx"


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        s.add(Zone(id="tdp-1", name="TDP 1"))
        s.add_all([Node(id="n1", zone_id="tdp-1", name="n1", online=True),
                   Node(id="n2", zone_id="tdp-1", name="n2", online=False)])
        s.flush()
        b = Broadcast(occurrence_key="k", kind="manual", title="t", scheduled_at=utcnow(), start_at=utcnow(),
                      duration_s=1.0, status=BroadcastStatus.ON_AIR)
        s.add(b)
        s.flush()
        s.add_all([Delivery(broadcast_id=b.id, node_id="n1", command_id="c1"),
                   Delivery(broadcast_id=b.id, node_id="n2", command_id="c1")])
    yield factory
    engine.dispose()


def event(node: str, kind: str, at: dt.datetime | None = None, **extra: object) -> tuple[str, bytes]:
    body = {"v": 1, "node": node, "command_id": "c1", "broadcast_id": 1, "event": kind,
            "at": (at or utcnow()).isoformat(), **extra}
    return topics.event(SITE, node), json.dumps(body).encode()


def delivery(factory: sessionmaker[Session], node: str) -> Delivery:
    with factory() as s:
        return s.query(Delivery).filter_by(node_id=node).one()


def test_events_move_a_delivery_forward_and_settle_the_broadcast(factory: sessionmaker[Session]) -> None:
    """received → ready → started → finished fills every timestamp; all final settles the broadcast."""
    rec = Recorder(factory, timeout_s=30)
    rec.process([event("n1", "received"), event("n1", "ready"), event("n1", "started"),
                 event("n1", "finished", played_s=1.02)])
    d = delivery(factory, "n1")
    assert d.state == DeliveryState.FINISHED and d.played_s == 1.02
    assert d.received_at and d.ready_at and d.started_at and d.finished_at
    rec.process([event("n2", "expired", reason="late")])
    with factory() as s:
        b = s.get_one(Broadcast, 1)
        assert b.status == BroadcastStatus.PARTIAL and b.completed_at is not None


def test_late_events_never_move_a_delivery_backwards(factory: sessionmaker[Session]) -> None:
    """A 'received' arriving after 'finished' only fills its timestamp; a repeated 'finished' changes nothing."""
    rec = Recorder(factory, timeout_s=30)
    rec.process([event("n1", "finished", played_s=1.0)])
    rec.process([event("n1", "received"), event("n1", "finished", played_s=9.0)])
    d = delivery(factory, "n1")
    assert d.state == DeliveryState.FINISHED and d.played_s == 1.0 and d.received_at is not None


def test_forged_unknown_and_malformed_events_are_dropped(factory: sessionmaker[Session]) -> None:
    """An event naming another node than its topic, an unknown command or garbage is dropped and counted."""
    rec = Recorder(factory, timeout_s=30)
    topic, payload = event("n2", "finished")
    forged = (topics.event(SITE, "n1"), payload)
    unknown = (topics.event(SITE, "n1"), payload.replace(b'"c1"', b'"zzz"').replace(b'"n2"', b'"n1"'))
    rec.process([forged, unknown, (topic, b"{"), (topic, b"null")])
    assert rec.dropped == 4
    assert delivery(factory, "n1").state == DeliveryState.ISSUED
    assert delivery(factory, "n2").state == DeliveryState.ISSUED


def test_late_last_will_of_an_earlier_session_is_ignored(factory: sessionmaker[Session]) -> None:
    """A Will from session 5 arriving after session 6 came online does not mark the node offline."""
    rec = Recorder(factory, timeout_s=30)
    state = topics.state(SITE, "n1")
    rec.process([(state, json.dumps({"v": 1, "node": "n1", "online": True, "session": 6}).encode())])
    rec.process([(state, json.dumps({"v": 1, "node": "n1", "online": False, "session": 5}).encode())])
    with factory() as s:
        node = s.get_one(Node, "n1")
        assert node.online and node.session == 6


def test_time_up_marks_open_deliveries_missed_or_failed(factory: sessionmaker[Session]) -> None:
    """After start + duration + timeout, an offline node's delivery is 'missed: offline', an online one's failed."""
    assert settle_due(factory, timeout_s=3600) == 0
    with transaction(factory) as s:
        b = s.get_one(Broadcast, 1)
        b.start_at = utcnow() - dt.timedelta(hours=2)
    assert settle_due(factory, timeout_s=60) == 1
    assert delivery(factory, "n2").state == DeliveryState.MISSED
    assert delivery(factory, "n2").reason == "missed: offline"
    assert delivery(factory, "n1").state == DeliveryState.FAILED
    with factory() as s:
        assert s.get_one(Broadcast, 1).status == BroadcastStatus.FAILED
