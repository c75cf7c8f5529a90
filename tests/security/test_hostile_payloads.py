"""Hostile node payloads (huge, deeply nested, wrong types, forged, unknown ids) are dropped with a log line.

None of them may crash or stall the recorder, nor take good messages of the same batch down with them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from radio.db import make_engine, migrate, session_factory, transaction
from radio.dispatch import topics
from radio.logbook.recorder import Recorder
from radio.models import Broadcast, BroadcastStatus, Delivery, DeliveryState, Node, Zone, utcnow
from radio.service import Service
from radio.settings import Settings
from tests.conftest import wait_for
from tests.security.conftest import Peer

SITE = "tho-xuong"
NOW = "2026-11-27T06:30:00Z"


def _event(**fields: object) -> bytes:
    body: dict[str, object] = {"v": 1, "node": "n1", "command_id": "c1", "event": "received", "at": NOW}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def _deep(depth: int) -> bytes:
    return b'{"v": 1, "node": "n1", "command_id": "c1", "event": "received", "at": "' + NOW.encode() + \
        b'", "x": ' + b"[" * depth + b"]" * depth + b"}"


EVT = topics.event(SITE, "n1")
# (topic, payload) pairs, each of which must be dropped on its own.
HOSTILE: dict[str, tuple[str, bytes]] = {
    "1 MB": (EVT, _event(reason="x" * 1_000_000)),
    "deep JSON": (EVT, b"[" * 30_000 + b"]" * 30_000),
    "deep JSON inside an event": (EVT, _deep(20_000)),
    "not JSON": (EVT, b"\x00\xff{not json"),
    "not UTF-8": (EVT, b'{"v": 1, "node": "\xff\xfe"}'),
    "empty": (EVT, b""),
    "a list": (EVT, b"[1, 2, 3]"),
    "null": (EVT, b"null"),
    "another version": (EVT, _event(v=2)),
    "node as a number": (EVT, _event(node=42)),
    "unknown event": (EVT, _event(event="exploded")),
    "time as text": (EVT, _event(at="hôm qua")),
    "time without zone": (EVT, _event(at="2026-11-27T06:30:00")),
    "played as text": (EVT, _event(event="finished", played_s="nhiều")),
    "played negative": (EVT, _event(event="finished", played_s=-1)),
    "played NaN": (EVT, _event(event="finished").replace(b"}", b', "played_s": NaN}')),
    "played infinite": (EVT, _event(event="finished").replace(b"}", b', "played_s": 1e999}')),
    "command id as a list": (EVT, _event(command_id=["c1"])),
    "command id with a wildcard": (EVT, _event(command_id="c1/#")),
    "huge integer": (EVT, _event().replace(b"}", b', "broadcast_id": ' + b"9" * 5000 + b"}")),
    "reason too long": (EVT, _event(event="failed", reason="x" * 501)),
    "unknown command id": (EVT, _event(command_id="khong-co")),
    "another node's event": (EVT, _event(node="n2")),
    "unknown node": (topics.event(SITE, "n9"), _event(node="n9")),
    "state with wrong types": (topics.state(SITE, "n1"), b'{"v": 1, "node": "n1", "online": "yes", "session": -1}'),
    "another node's state": (topics.state(SITE, "n1"), b'{"v": 1, "node": "n2", "online": false, "session": 1}'),
    "heartbeat with wrong types": (topics.heartbeat(SITE, "n1"),
                                   b'{"v": 1, "node": "n1", "session": 1, "at": "' + NOW.encode() +
                                   b'", "volume": 500}'),
    "not a node topic": (f"{topics.root(SITE)}/evt/n1/extra", _event()),
}
# Values that once passed validation but not the database or the clock, and aborted the whole batch they came
# in (good messages included). radio/dispatch/messages.py now bounds them (session ≤ 2**63 - 1; instants within
# datetime's range once in UTC): they are dropped like any other hostile message. Kept as regression cases.
POISON: dict[str, tuple[str, bytes]] = {
    "session beyond 64 bits": (topics.state(SITE, "n1"),
                               b'{"v": 1, "node": "n1", "online": true, "session": 9223372036854775808}'),
    "instant beyond year 9999 in UTC": (EVT, _event(at="9999-12-31T23:59:59-12:00")),
}


def _registry(factory: sessionmaker[Session]) -> int:
    """Nodes n1 and n2 in one zone and an on-air broadcast with command c1 for both; returns the broadcast id."""
    with transaction(factory) as s:
        s.add(Zone(id="z1", name="z1"))
        s.flush()
        s.add_all([Node(id="n1", zone_id="z1", name="n1"), Node(id="n2", zone_id="z1", name="n2")])
        s.flush()
        b = Broadcast(occurrence_key="hostile", kind="manual", title="t", scheduled_at=utcnow(), start_at=utcnow(),
                      duration_s=600.0, status=BroadcastStatus.ON_AIR)
        s.add(b)
        s.flush()
        s.add_all([Delivery(broadcast_id=b.id, node_id="n1", command_id="c1"),
                   Delivery(broadcast_id=b.id, node_id="n2", command_id="c1")])
        return b.id


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    _registry(factory)
    yield factory
    engine.dispose()


def _state(factory: sessionmaker[Session], node: str) -> str:
    with factory() as s:
        return s.query(Delivery).filter_by(node_id=node).one().state


def _good(node: str = "n2") -> tuple[str, bytes]:
    return topics.event(SITE, node), _event(node=node, at=utcnow().isoformat())


@pytest.mark.parametrize("case", [
    *HOSTILE,
    *POISON,
])
def test_a_hostile_message_is_dropped_and_the_rest_of_its_batch_recorded(
    factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """The hostile message is counted as dropped with a warning; a good event in the same batch still moves its delivery."""
    recorder = Recorder(factory, timeout_s=30)
    with caplog.at_level(logging.WARNING, logger="radio.logbook.recorder"):
        recorder.process([{**HOSTILE, **POISON}[case], _good()])
    assert recorder.dropped == 1
    assert any("dropped" in r.getMessage() for r in caplog.records)
    assert _state(factory, "n1") == DeliveryState.ISSUED
    assert _state(factory, "n2") == DeliveryState.RECEIVED


def test_the_service_survives_a_flood_of_hostile_messages(make_settings: Callable[..., Settings]) -> None:
    """Over MQTT, hundreds of hostile messages (1 MB ones included) are dropped and a good event right after is recorded."""
    service = Service(make_settings(site_id=SITE))
    service.start()
    try:
        broadcast_id = _registry(service.factory)
        assert service.broker is not None
        host, port = service.broker.host, service.broker.port
        node = Peer(host, port, "n1")
        assert node.connect()
        node.subscribe(topics.clock_reply(SITE, "n1"))
        # The service subscribes to one level under evt/, so a message on a deeper topic never reaches it.
        flood = [(t, p) for t, p in HOSTILE.values() if topics.kind_of(t)] * 10
        clock_junk = [(topics.clock_request(SITE, "n1"), payload) for _, payload in list(HOSTILE.values())[:10]]
        for topic, payload in [*flood, *clock_junk]:
            node.publish(topic, payload)
        wait_for(lambda: service.recorder.dropped >= len(flood) and service.clock.dropped >= len(clock_junk), 30,
                 "the hostile messages to be dropped")
        assert service.recorder.dropped == len(flood) and service.clock.dropped == len(clock_junk)
        topic, payload = _good("n2")
        node.publish(topic, payload)
        node.publish(topics.clock_request(SITE, "n1"), b'{"v": 1, "node": "n1", "id": "t1", "t0": 1.5}')
        wait_for(lambda: _state(service.factory, "n2") == DeliveryState.RECEIVED, 10, "the good event")
        wait_for(lambda: node.topics() == [topics.clock_reply(SITE, "n1")], 10, "the clock reply")
        assert any(t.name == "recorder" and t.is_alive() for t in threading.enumerate())
        with service.factory() as s:
            assert s.get_one(Broadcast, broadcast_id).status == BroadcastStatus.ON_AIR
        node.close()
    finally:
        service.stop()
