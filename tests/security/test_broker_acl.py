"""Per-node credentials and the topic ACL, enforced alike by Mosquitto (from `radio mqtt export`) and the embedded broker.

MQTT 3.1.1 has no way to tell a publisher its message was refused: the broker acknowledges it and drops it.
So every "refused" below is shown by a subscriber that sees nothing, while an authorised publish sent after
it, to the same subscriber, does arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from radio.db import transaction
from radio.dispatch import acl, topics
from tests.conftest import wait_for
from tests.security.conftest import SITE, Peer, Registry, SecureBroker, embedded_secure

SERVICE = acl.SERVICE_USER
SETTLE_S = 0.3  # after the authorised "marker" message arrives, how long a refused one would still have had


def arrives(peer: Peer, topic: str, timeout: float = 5.0) -> None:
    wait_for(lambda: topic in peer.topics(), timeout, f"{topic} at {peer.client_id}")
    time.sleep(SETTLE_S)


def test_anonymous_unknown_and_wrong_password_logins_are_refused(
    secure_broker: SecureBroker, peers: Callable[..., Peer]
) -> None:
    """Only accounts from the registry, with their own password, may connect."""
    assert not peers(secure_broker, None, client_id="n1", connect=False).connect()
    assert not peers(secure_broker, "n1", password="doan-mo", connect=False).connect()
    assert not peers(secure_broker, "ke-la", password="doan-mo", connect=False).connect()
    assert not peers(secure_broker, SERVICE, password="doan-mo", connect=False).connect()
    assert not peers(secure_broker, "n2", password=secure_broker.registry.passwords["n1"], connect=False).connect()
    assert peers(secure_broker, "n1", connect=False).connect()
    assert peers(secure_broker, SERVICE, client_id="radio-service-tx-test", connect=False).connect()


def test_a_node_cannot_publish_commands(secure_broker: SecureBroker, peers: Callable[..., Peer]) -> None:
    """A node's publishes on the site's, a zone's or another node's command topic never reach the nodes; the service's do."""
    n2 = peers(secure_broker, "n2")
    assert n2.subscribe(*topics.node_subscriptions(SITE, "z1", "n2")) == [1, 1, 1]
    n1 = peers(secure_broker, "n1")
    for topic in (topics.cmd_all(SITE), topics.cmd_zone(SITE, "z1"), topics.cmd_node(SITE, "n2")):
        n1.publish(topic, b'{"v": 1, "id": "gia-mao", "type": "play"}')
    service = peers(secure_broker, SERVICE)
    service.publish(topics.cmd_node(SITE, "n2"), b'{"v": 1, "id": "that", "type": "stop"}')
    arrives(n2, topics.cmd_node(SITE, "n2"))
    assert n2.received == [(topics.cmd_node(SITE, "n2"), b'{"v": 1, "id": "that", "type": "stop"}')]


def test_a_node_cannot_read_another_nodes_or_zones_commands(
    secure_broker: SecureBroker, peers: Callable[..., Peer]
) -> None:
    """Subscribing to another node's or zone's commands, or to everything, yields only the node's own messages."""
    n1 = peers(secure_broker, "n1")
    granted = n1.subscribe(topics.cmd_node(SITE, "n2"), topics.cmd_zone(SITE, "z2"), f"{topics.root(SITE)}/#")
    # Mosquitto 2.0 grants such subscriptions and filters each message; the embedded broker refuses them (128).
    assert granted == ([1, 1, 1] if secure_broker.kind == "mosquitto" else [128, 128, 128])
    n1.subscribe(*topics.node_inbox(SITE, "z1", "n1"))
    n2 = peers(secure_broker, "n2")
    n2.publish(topics.event(SITE, "n2"), b'{"v": 1}')  # another node's report is not for n1 either
    service = peers(secure_broker, SERVICE)
    for topic in (topics.cmd_node(SITE, "n2"), topics.cmd_zone(SITE, "z2"), topics.clock_reply(SITE, "n2")):
        service.publish(topic, b"{}")
    service.publish(topics.cmd_node(SITE, "n1"), b"{}")
    arrives(n1, topics.cmd_node(SITE, "n1"))
    assert set(n1.topics()) == {topics.cmd_node(SITE, "n1")}


def test_a_node_cannot_forge_another_nodes_reports(secure_broker: SecureBroker, peers: Callable[..., Peer]) -> None:
    """Events, state, heartbeats and clock requests published under another node's name are dropped by the broker."""
    service = peers(secure_broker, SERVICE, client_id="radio-service-tx-test")
    service.subscribe(*topics.service_subscriptions(SITE))
    n2 = peers(secure_broker, "n2")
    n2.subscribe(topics.clock_reply(SITE, "n2"))
    n1 = peers(secure_broker, "n1")
    forged = {
        topics.event(SITE, "n2"): b'{"v": 1, "node": "n2", "command_id": "c1", "event": "finished"}',
        topics.state(SITE, "n2"): b'{"v": 1, "node": "n2", "online": false, "session": 99}',
        topics.heartbeat(SITE, "n2"): b'{"v": 1, "node": "n2"}',
        topics.clock_request(SITE, "n2"): b'{"v": 1, "node": "n2"}',
        topics.clock_reply(SITE, "n2"): b'{"v": 1, "t0": 0, "t1": 1e9, "t2": 1e9}',
    }
    for topic, payload in forged.items():
        n1.publish(topic, payload, retain=topic == topics.state(SITE, "n2"))
    own = [topics.state(SITE, "n1"), topics.heartbeat(SITE, "n1"), topics.clock_request(SITE, "n1"),
           topics.event(SITE, "n1")]
    for topic in own:
        n1.publish(topic, b"{}")
    arrives(service, topics.event(SITE, "n1"))
    assert service.topics() == own
    assert n2.received == []
    late = peers(secure_broker, SERVICE, client_id="radio-service-late")  # no forged retained state either
    late.subscribe(topics.state(SITE, "+"))
    time.sleep(SETTLE_S)
    assert late.received == []


def test_the_service_commands_nodes_and_reads_their_reports(
    secure_broker: SecureBroker, peers: Callable[..., Peer]
) -> None:
    """The service account reaches every command topic and reads every node's reports; nodes get their clock replies."""
    service = peers(secure_broker, SERVICE)
    service.subscribe(*topics.service_subscriptions(SITE))
    nodes = {n: peers(secure_broker, n) for n in ("n1", "n3")}
    nodes["n1"].subscribe(*topics.node_inbox(SITE, "z1", "n1"))
    nodes["n3"].subscribe(*topics.node_inbox(SITE, "z2", "n3"))
    for topic in (topics.cmd_all(SITE), topics.cmd_zone(SITE, "z1"), topics.cmd_zone(SITE, "z2"),
                  topics.cmd_node(SITE, "n3"), topics.clock_reply(SITE, "n1")):
        service.publish(topic, b"{}")
    wait_for(lambda: len(nodes["n1"].received) == 3 and len(nodes["n3"].received) == 3, 5, "the commands")
    assert set(nodes["n1"].topics()) == {topics.cmd_all(SITE), topics.cmd_zone(SITE, "z1"),
                                         topics.clock_reply(SITE, "n1")}
    assert set(nodes["n3"].topics()) == {topics.cmd_all(SITE), topics.cmd_zone(SITE, "z2"),
                                         topics.cmd_node(SITE, "n3")}
    nodes["n3"].publish(topics.event(SITE, "n3"), b"{}")
    arrives(service, topics.event(SITE, "n3"))


def test_a_last_will_cannot_carry_a_command(secure_broker: SecureBroker, peers: Callable[..., Peer]) -> None:
    """A node that sets its Last Will on a command topic and then drops off gets nothing to the other nodes."""
    n2 = peers(secure_broker, "n2")
    n2.subscribe(topics.cmd_all(SITE), topics.state(SITE, "+"))
    n1 = peers(secure_broker, "n1", connect=False, will=(topics.cmd_all(SITE), b'{"v": 1, "type": "play"}'))
    if n1.connect():  # Mosquitto may accept the CONNECT and drop the Will; the embedded broker refuses it
        n1.abort()
    n3 = peers(secure_broker, "n3", will=(topics.state(SITE, "n3"), b'{"online": false}'))
    n3.abort()  # its own state topic: allowed, but n2 may not read it, so nothing arrives there either
    service = peers(secure_broker, SERVICE)
    time.sleep(1.0)
    service.publish(topics.cmd_all(SITE), b"marker")
    arrives(n2, topics.cmd_all(SITE))
    assert n2.received == [(topics.cmd_all(SITE), b"marker")]


def test_a_refused_login_cannot_take_over_a_nodes_session(
    secure_broker: SecureBroker, peers: Callable[..., Peer]
) -> None:
    """A CONNECT with a node's client id but a wrong password neither disconnects that node nor publishes its Will."""
    n2 = peers(secure_broker, "n2", clean_session=False)
    n2.subscribe(*topics.node_subscriptions(SITE, "z1", "n2"))
    intruder = peers(secure_broker, "n2", password="doan-mo", clean_session=False, connect=False,
                     will=(topics.cmd_all(SITE), b'{"v": 1, "type": "play"}'))
    assert not intruder.connect()
    service = peers(secure_broker, SERVICE)
    time.sleep(1.0)
    service.publish(topics.cmd_node(SITE, "n2"), b"marker")
    arrives(n2, topics.cmd_node(SITE, "n2"))
    assert not n2.disconnected.is_set()
    assert n2.received == [(topics.cmd_node(SITE, "n2"), b"marker")]


def test_a_new_password_replaces_the_old_one(secure_broker: SecureBroker, peers: Callable[..., Peer]) -> None:
    """After `radio node credentials` (and, for Mosquitto, an export and reload) only the new password logs in."""
    registry = secure_broker.registry
    old = registry.passwords["n3"]
    connected = peers(secure_broker, "n3", password=old)
    with transaction(registry.factory) as session:
        new = acl.issue_node_password(session, "n3")
    secure_broker.reload()
    # Mosquitto re-checks connected clients on reload; the embedded broker checks at the next CONNECT only.
    assert connected.disconnected.wait(5) is (secure_broker.kind == "mosquitto")
    assert not peers(secure_broker, "n3", password=old, connect=False).connect()
    assert peers(secure_broker, "n3", password=new, connect=False).connect()


@pytest.mark.parametrize("client_id", ["n2", "n1-other", "radio-service-tx"])
def test_the_embedded_broker_binds_a_node_to_its_own_client_id(
    registry: Registry, peers: Callable[..., Peer], client_id: str
) -> None:
    """With n1's password a client must call itself n1: it cannot take over n2's session or pose as the service."""
    broker = embedded_secure(registry)
    broker.start()
    try:
        target = SecureBroker("embedded", broker.host, broker.port, registry, lambda: None)
        n2 = peers(target, "n2", clean_session=False)
        assert not peers(target, "n1", client_id=client_id, connect=False).connect()
        time.sleep(0.3)
        assert not n2.disconnected.is_set()
        assert broker.policy is not None and broker.policy.refused_logins == 1
    finally:
        broker.stop()


def test_the_embedded_broker_in_secure_mode_gives_the_service_its_login(registry: Registry) -> None:
    """The secure embedded broker hands the service an address with the service account; open mode stays anonymous."""
    broker = embedded_secure(registry)
    address = broker.service_address()
    assert (address.username, address.password) == (SERVICE, registry.passwords[SERVICE])
    with pytest.raises(ValueError, match="accounts"):
        type(broker)("127.0.0.1", 1, secure=True)
    open_address = type(broker)("127.0.0.1", 1).service_address()
    assert open_address.username is None and str(open_address) == "mqtt://127.0.0.1:1"


def test_a_real_node_agent_works_within_its_rules(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """The reference node agent, logged in as itself, plays a zone command, syncs its clock and reports within its rules."""
    from tests.node.conftest import AudioServer, FakeServer, command, node_config, start_agent

    registry = secure_broker.registry
    base = f"{secure_broker.host}:{secure_broker.port}"
    server = FakeServer(f"mqtt://{SERVICE}:{registry.passwords[SERVICE]}@{base}")
    server.start()
    audio = AudioServer()

    async def scenario() -> None:
        config = node_config(f"mqtt://n1:{registry.passwords['n1']}@{base}", tmp_path, "n1")
        async with audio.client() as http:
            running = start_agent(config, http)
            try:
                await server.until(lambda: running.agent.connected.is_set(), what="the node to connect")
                cmd = command(lead_s=1.0)
                server.send(cmd, topics.cmd_zone(SITE, "z1"))
                await server.until(lambda: "finished" in server.steps(cmd.id), what="finished")
                await server.until(lambda: running.agent.clock.synced.is_set() and server.heartbeats,
                                   what="a clock sync and a heartbeat")
            finally:
                await running.stop()

    try:
        asyncio.run(scenario())
        assert server.steps(server.events[0].command_id) == ["received", "ready", "started", "finished"]
        assert server.states[0].node == "n1" and server.states[0].online
    finally:
        server.close()
