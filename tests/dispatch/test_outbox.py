"""The outbox: stored commands are published, unanswered ones resent per node, expired ones closed as missed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from radio.db import make_engine, migrate, session_factory, transaction
from radio.dispatch import topics
from radio.dispatch.outbox import EXPIRED_NO_ANSWER, MISSED_OFFLINE, Outbox
from radio.models import Broadcast, BroadcastStatus, Command, Delivery, DeliveryState, Node, Zone, utcnow

SITE = "tx"


class FakeMqtt:
    """Records publishes; ``connected`` can be flipped (the outbox only publishes and reads that flag)."""

    def __init__(self) -> None:
        self.connected = True
        self.sent: list[tuple[str, dict[str, object]]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        assert qos == 1 and not retain
        self.sent.append((topic, json.loads(payload)))

    def topics(self) -> list[str]:
        return [t for t, _ in self.sent]


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'radio.db'}")
    migrate(engine)
    f = session_factory(engine)
    with transaction(f) as session:
        session.add(Zone(id="z1", name="Z1"))
        session.add_all([Node(id="on", zone_id="z1", name="on", online=True),
                         Node(id="off", zone_id="z1", name="off", online=False)])
    yield f
    engine.dispose()


def _issue(factory: sessionmaker[Session], *, published_s_ago: float | None = 10.0, valid_s: float = 60.0,
           states: dict[str, DeliveryState] | None = None, start_s: float = -1.0, duration_s: float = 2.0) -> str:
    """A broadcast on zone z1 with one command and a delivery per node; returns the command id."""
    now = utcnow()
    start = now + dt.timedelta(seconds=start_s)
    states = states or {"on": DeliveryState.ISSUED, "off": DeliveryState.ISSUED}
    with transaction(factory) as session:
        b = Broadcast(occurrence_key=f"t:{now.timestamp()}", kind="manual", title="t", scheduled_at=now,
                      status=BroadcastStatus.ON_AIR, start_at=start, duration_s=duration_s)
        session.add(b)
        session.flush()
        payload = {"v": 1, "id": f"c{b.id}", "type": "play", "start_at": start.isoformat(),
                   "valid_until": (now + dt.timedelta(seconds=valid_s)).isoformat(),
                   "audio": {"url": "http://x/a.mp3", "sha256": "0" * 64, "duration_s": duration_s}}
        session.add(Command(id=f"c{b.id}", broadcast_id=b.id, topic=topics.cmd_zone(SITE, "z1"), payload=payload,
                            created_at=now - dt.timedelta(seconds=30), valid_until=now + dt.timedelta(seconds=valid_s),
                            published_at=None if published_s_ago is None else now - dt.timedelta(seconds=published_s_ago)))
        session.add_all(Delivery(broadcast_id=b.id, node_id=n, command_id=f"c{b.id}", state=s) for n, s in states.items())
        return f"c{b.id}"


def _outbox(factory: sessionmaker[Session], mqtt: FakeMqtt) -> Outbox:
    return Outbox(factory, mqtt, site=SITE, resend_s=5.0, end_grace_s=1.0)  # type: ignore[arg-type]


def test_a_command_stored_but_never_published_is_published_on_its_topic(factory: sessionmaker[Session]) -> None:
    """After a crash between storing and publishing, the next tick publishes it where it was meant to go."""
    mqtt = FakeMqtt()
    command_id = _issue(factory, published_s_ago=None)
    report = _outbox(factory, mqtt).tick()
    assert report.published == 1 and mqtt.topics()[0] == topics.cmd_zone(SITE, "z1")
    assert mqtt.sent[0][1]["id"] == command_id
    with factory() as session:
        row = session.get_one(Command, command_id)
        assert row.published_at is not None and row.attempts >= 1


def test_unanswered_commands_are_resent_to_online_nodes_only_and_not_too_often(factory: sessionmaker[Session]) -> None:
    """An issued delivery gets the command again on its node's topic after resend_s; offline nodes wait."""
    mqtt = FakeMqtt()
    command_id = _issue(factory)
    outbox = _outbox(factory, mqtt)
    assert outbox.tick().resent == 1
    assert mqtt.topics() == [topics.cmd_node(SITE, "on")] and mqtt.sent[0][1]["id"] == command_id
    assert outbox.tick().resent == 0  # just sent: wait resend_s again
    with factory() as session:
        assert session.get_one(Command, command_id).attempts == 1


def test_reconnect_and_a_node_coming_back_resend_at_once(factory: sessionmaker[Session]) -> None:
    """After a reconnect every open delivery gets a resend; a node that says it is online gets its own."""
    mqtt = FakeMqtt()
    _issue(factory, published_s_ago=0.0, states={"on": DeliveryState.PLAYING, "off": DeliveryState.ISSUED}, start_s=-1,
           duration_s=30)
    outbox = _outbox(factory, mqtt)
    assert outbox.tick().resent == 0
    outbox.on_connect()
    assert outbox.tick().resent == 2
    outbox.node_online("off")
    assert outbox.tick().nodes == {"off"}  # even right after a resend, and though the table still says offline
    assert mqtt.topics()[-1] == topics.cmd_node(SITE, "off")


def test_answered_but_silent_after_the_expected_end_is_asked_again(factory: sessionmaker[Session]) -> None:
    """A playing delivery whose audio should be over (its final answer lost) gets a resend; the node re-answers."""
    mqtt = FakeMqtt()
    _issue(factory, states={"on": DeliveryState.PLAYING}, start_s=-10, duration_s=2)
    assert _outbox(factory, mqtt).tick().nodes == {"on"}


def test_signals_wait_while_disconnected(factory: sessionmaker[Session]) -> None:
    """Nothing is published while the broker is away; the reconnect signal is kept for later."""
    mqtt = FakeMqtt()
    _issue(factory)
    outbox = _outbox(factory, mqtt)
    mqtt.connected = False
    outbox.on_connect()
    assert outbox.tick().resent == 0 and mqtt.sent == []
    mqtt.connected = True
    assert outbox.tick().resent == 2  # the kept reconnect signal resends to every open delivery


def test_expired_unanswered_deliveries_become_missed_offline_or_expired(factory: sessionmaker[Session]) -> None:
    """Past valid_until: never answered and offline → missed: offline; online → expired; answered ones untouched."""
    mqtt = FakeMqtt()
    with transaction(factory) as session:
        session.add(Node(id="busy", zone_id="z1", name="busy", online=True))
    command_id = _issue(factory, valid_s=-1, start_s=-30, states={
        "on": DeliveryState.ISSUED, "off": DeliveryState.ISSUED, "busy": DeliveryState.FINISHED})
    report = _outbox(factory, mqtt).tick()
    assert report.expired == 2 and mqtt.sent == []
    with factory() as session:
        rows = {d.node_id: d for d in session.query(Delivery).filter(Delivery.command_id == command_id)}
        assert (rows["off"].state, rows["off"].reason) == (DeliveryState.MISSED, MISSED_OFFLINE)
        assert (rows["on"].state, rows["on"].reason) == (DeliveryState.EXPIRED, EXPIRED_NO_ANSWER)
        assert rows["busy"].state == DeliveryState.FINISHED
        assert rows["busy"].broadcast.status != BroadcastStatus.ON_AIR  # all final: settled at once
