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


# resend storms: a backlogged recorder, caps, back-off, group topics -----------------------------------------
class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _zone(factory: sessionmaker[Session], count: int, *, online: bool = True) -> list[str]:
    ids = [f"z-{i:03d}" for i in range(count)]
    with transaction(factory) as session:
        session.add_all(Node(id=i, zone_id="z1", name=i, online=online) for i in ids)
    return ids


def test_nothing_is_resent_while_the_recorder_has_a_backlog(factory: sessionmaker[Session]) -> None:
    """Issued deliveries look unanswered while their answers still wait in the recorder's queue: resends wait for it,
    and for resend_s more (the batch being written is not in the queue); signals (reconnect) are kept meanwhile."""
    clock = Clock()
    mqtt = FakeMqtt()
    _issue(factory)
    queued = [5000]
    outbox = Outbox(factory, mqtt, site=SITE, resend_s=5.0, backlog=lambda: queued[0], backlog_limit=100,  # type: ignore[arg-type]
                    monotonic=clock)
    outbox.on_connect()
    report = outbox.tick()
    assert (report.resent, report.grouped) == (0, 0) and mqtt.sent == []
    queued[0] = 3
    for _ in range(5):  # caught up at t = 1, held until t = 1 + resend_s
        clock.now += 1
        assert outbox.tick().resent == 0 and mqtt.sent == []
    clock.now += 1
    report = outbox.tick()
    assert report.nodes == {"on", "off"}  # the kept reconnect signal: offline nodes too (their broker queue)
    assert sorted(mqtt.topics()) == sorted([topics.cmd_node(SITE, "on"), topics.cmd_node(SITE, "off")])


def test_resends_per_tick_are_capped_and_the_rest_follow(factory: sessionmaker[Session]) -> None:
    """With 7 silent nodes and a cap of 3 per tick, every node still gets its resend, 3 at a time."""
    nodes = _zone(factory, 7)
    _issue(factory, states={n: DeliveryState.ISSUED for n in nodes})
    mqtt = FakeMqtt()
    outbox = Outbox(factory, mqtt, site=SITE, max_resends=3)  # type: ignore[arg-type]
    reports = [outbox.tick() for _ in range(3)]
    assert [r.resent for r in reports] == [3, 3, 1] and [r.held for r in reports] == [4, 1, 0]
    assert sorted(mqtt.topics()) == sorted(topics.cmd_node(SITE, n) for n in nodes)


def test_an_unanswered_node_is_asked_less_and_less_often(factory: sessionmaker[Session]) -> None:
    """Each unanswered resend doubles the wait (5, 10, 20 s …, at most 8 × resend_s); an answer resets it."""
    clock = Clock()
    mqtt = FakeMqtt()
    command_id = _issue(factory, states={"on": DeliveryState.ISSUED}, start_s=-30)
    outbox = Outbox(factory, mqtt, site=SITE, resend_s=5.0, end_grace_s=0, monotonic=clock)  # type: ignore[arg-type]
    sent_at = []
    for _ in range(72):  # 72 s in 1 s ticks
        if outbox.tick().resent:
            sent_at.append(clock.now - 1000)
        clock.now += 1
    assert sent_at == [0, 10, 30, 70]
    with transaction(factory) as session:  # it answers, but its final answer is lost: asked again after resend_s
        session.query(Delivery).filter(Delivery.command_id == command_id).update({"state": DeliveryState.PLAYING})
    clock.now = 1000 + 74
    assert outbox.tick().resent == 0
    clock.now = 1000 + 75
    assert outbox.tick().resent == 1


def test_many_missing_nodes_of_one_command_get_one_publish_on_its_topic(factory: sessionmaker[Session]) -> None:
    """After a reconnect with 40 of 40 nodes of a zone command open, one publish on the zone topic replaces 40;
    a command with only a few nodes missing is resent node by node."""
    nodes = _zone(factory, 40)
    _issue(factory, states={n: DeliveryState.ISSUED for n in nodes})
    few = _issue(factory, states={n: DeliveryState.ISSUED if n in nodes[:2] else DeliveryState.FINISHED
                                  for n in nodes})
    mqtt = FakeMqtt()
    outbox = Outbox(factory, mqtt, site=SITE, backlog=lambda: 0, group_min=20)  # type: ignore[arg-type]
    report = outbox.tick()
    assert report.grouped == 1 and report.resent == 2
    assert mqtt.topics().count(topics.cmd_zone(SITE, "z1")) == 1
    assert sorted(t for t, p in mqtt.sent if p["id"] == few) == sorted(topics.cmd_node(SITE, n) for n in nodes[:2])
    assert outbox.tick().resent == 0 and len(mqtt.sent) == 3  # all of them count as sent: none is asked again at once


def test_without_a_backlog_probe_there_are_no_group_resends(factory: sessionmaker[Session]) -> None:
    """Without knowing whether the recorder is behind, a group resend could make a whole zone answer for nothing:
    the outbox then resends node by node (capped)."""
    nodes = _zone(factory, 30)
    _issue(factory, states={n: DeliveryState.ISSUED for n in nodes})
    mqtt = FakeMqtt()
    report = Outbox(factory, mqtt, site=SITE, group_min=20, max_resends=10).tick()  # type: ignore[arg-type]
    assert (report.grouped, report.resent, report.held) == (0, 10, 20)
    assert topics.cmd_zone(SITE, "z1") not in mqtt.topics()


def test_expiry_looks_back_one_window_after_a_full_sweep_at_start(factory: sessionmaker[Session]) -> None:
    """The first tick closes everything ever left open; later ticks only look at commands expired within the
    window (a year of history is not scanned every second). A restarted outbox sweeps again."""
    mqtt = FakeMqtt()
    outbox = Outbox(factory, mqtt, site=SITE, expire_window_s=3600)  # type: ignore[arg-type]
    ancient = _issue(factory, valid_s=-7200, start_s=-7300, states={"on": DeliveryState.ISSUED})
    assert outbox.tick().expired == 1
    old = _issue(factory, valid_s=-7200, start_s=-7300, states={"on": DeliveryState.ISSUED})
    recent = _issue(factory, valid_s=-60, start_s=-100, states={"on": DeliveryState.ISSUED})
    assert outbox.tick().expired == 1

    def state(command_id: str) -> str:
        with factory() as session:
            return session.query(Delivery).filter(Delivery.command_id == command_id).one().state

    assert (state(ancient), state(old), state(recent)) == (DeliveryState.EXPIRED, DeliveryState.ISSUED,
                                                            DeliveryState.EXPIRED)
    assert Outbox(factory, mqtt, site=SITE).tick().expired == 1  # type: ignore[arg-type]
    assert state(old) == DeliveryState.EXPIRED


def test_a_node_ready_late_is_not_asked_again_before_its_own_playback_could_end(
        factory: sessionmaker[Session]) -> None:
    """start_at + duration has passed, but the node reported ready only later (slow download): it starts late, so
    its final answer is not missing yet; it is asked once its own playback should have ended."""
    mqtt = FakeMqtt()
    command_id = _issue(factory, states={"on": DeliveryState.READY}, start_s=-20, duration_s=5)
    with transaction(factory) as session:
        session.query(Delivery).filter(Delivery.command_id == command_id).update(
            {"ready_at": utcnow() - dt.timedelta(seconds=2)})
    outbox = _outbox(factory, mqtt)  # end_grace_s = 1
    assert outbox.tick().resent == 0
    with transaction(factory) as session:
        session.query(Delivery).filter(Delivery.command_id == command_id).update(
            {"ready_at": utcnow() - dt.timedelta(seconds=7)})
    assert outbox.tick().nodes == {"on"}


def test_a_long_lead_delays_the_first_resend_to_halfway(factory: sessionmaker[Session]) -> None:
    """A fan-out given a 60 s lead (thousands of nodes to fetch) gets thousands of answers back as slowly: an
    unanswered node is first asked again halfway to start_at, not after 5 s; it then still has 30 s to fetch."""
    mqtt = FakeMqtt()
    early = _issue(factory, published_s_ago=10, start_s=50, states={"on": DeliveryState.ISSUED})
    halfway = _issue(factory, published_s_ago=31, start_s=29, states={"on": DeliveryState.ISSUED})
    report = _outbox(factory, mqtt).tick()
    assert report.resent == 1 and [p["id"] for _, p in mqtt.sent] == [halfway]
    assert early != halfway


def test_a_node_still_fetching_may_take_the_whole_lead_from_its_receipt(factory: sessionmaker[Session]) -> None:
    """It said received late (the broker or the service was busy): it may still be fetching for a whole lead after
    that, so it is not asked again before that fetch and its playback could be over."""
    mqtt = FakeMqtt()
    command_id = _issue(factory, states={"on": DeliveryState.RECEIVED}, start_s=-20, duration_s=5)  # lead 20 s
    with transaction(factory) as session:
        row = session.get_one(Command, command_id)
        row.payload = {**row.payload, "issued_at": (utcnow() - dt.timedelta(seconds=40)).isoformat()}
        session.query(Delivery).filter(Delivery.command_id == command_id).update(
            {"received_at": utcnow() - dt.timedelta(seconds=10)})  # + 20 s lead + 5 s audio: over in 15 s
    outbox = _outbox(factory, mqtt)
    assert outbox.tick().resent == 0
    with transaction(factory) as session:
        session.query(Delivery).filter(Delivery.command_id == command_id).update(
            {"received_at": utcnow() - dt.timedelta(seconds=30)})
    assert outbox.tick().nodes == {"on"}
