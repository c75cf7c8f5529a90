"""Security test helpers: a node registry with credentials, brokers that enforce it, and plain MQTT peers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session, sessionmaker

from radio.db import make_engine, migrate, session_factory, transaction
from radio.dispatch import acl
from radio.dispatch.broker import EmbeddedBroker
from radio.models import Node, Zone
from radio.settings import Settings, load_settings
from tests.conftest import Mosquitto, free_port, unavailable

SITE = "tx"
# node -> zone: n1 and n2 share zone z1, n3 is alone in z2.
NODES = {"n1": "z1", "n2": "z1", "n3": "z2"}


@dataclass
class Registry:
    settings: Settings
    factory: sessionmaker[Session]
    passwords: dict[str, str]  # user -> password, the service account included


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """Three registered nodes with credentials, in a fresh SQLite database."""
    settings = load_settings(data_dir=tmp_path / "data", site_id=SITE, database_url=f"sqlite:///{tmp_path / 'radio.db'}")
    engine = make_engine(settings.db_url)
    migrate(engine)
    factory = session_factory(engine)
    passwords: dict[str, str] = {}
    with transaction(factory) as session:
        for zone in sorted(set(NODES.values())):
            session.add(Zone(id=zone, name=zone))
        session.flush()
        for node, zone in NODES.items():
            session.add(Node(id=node, zone_id=zone, name=node))
        session.flush()
        for node in NODES:
            passwords[node] = acl.issue_node_password(session, node)
    passwords[acl.SERVICE_USER] = acl.service_password(settings)
    yield Registry(settings, factory, passwords)
    engine.dispose()


@dataclass
class SecureBroker:
    kind: str
    host: str
    port: int
    registry: Registry
    reload: Callable[[], None]  # make the broker see the registry's current credentials


def start_secure_mosquitto(registry: Registry, tmp: Path) -> tuple[Mosquitto, Callable[[], None]]:
    """Mosquitto started from `radio mqtt export`'s files, anonymous access off; and its reload (export + SIGHUP)."""
    import shutil

    if shutil.which("mosquitto") is None:
        unavailable("the mosquitto binary is not installed")
    out = tmp / "mosquitto"
    with registry.factory() as session:
        result = acl.export(session, registry.settings, out)
    port = free_port()
    conf = tmp / "secure.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {result.passwd}\nacl_file {result.acl}\n"
        "persistence false\nmax_queued_messages 1000\nmax_packet_size 70000\n"
        # Run as the test's own user: started as root, Mosquitto would switch to 'mosquitto' and could not
        # read the files in the test's private directory (production: see the export's instructions).
        "user root\n"
    )
    broker = Mosquitto(port, conf)
    broker.start()

    def reload() -> None:
        with registry.factory() as session:
            acl.export(session, registry.settings, out)
        assert broker.proc is not None
        broker.proc.send_signal(1)  # SIGHUP: re-read the password and ACL files
        time.sleep(0.5)

    return broker, reload


@pytest.fixture(params=[pytest.param("mosquitto", marks=pytest.mark.mosquitto), "embedded"])
def secure_broker(request: pytest.FixtureRequest, registry: Registry, tmp_path: Path) -> Iterator[SecureBroker]:
    """The same registry enforced by Mosquitto (from the exported files) and by the embedded broker (secure mode)."""
    if request.param == "mosquitto":
        mosquitto, reload = start_secure_mosquitto(registry, tmp_path)
        yield SecureBroker("mosquitto", "127.0.0.1", mosquitto.port, registry, reload)
        mosquitto.stop()
        return
    broker = embedded_secure(registry)
    broker.start()
    yield SecureBroker("embedded", "127.0.0.1", broker.port, registry, lambda: None)
    broker.stop()


def embedded_secure(registry: Registry) -> EmbeddedBroker:
    return EmbeddedBroker("127.0.0.1", free_port(), secure=True,
                          accounts=acl.RegistryAccounts(registry.factory, registry.settings),
                          service_password=acl.service_password(registry.settings))


@dataclass
class Peer:
    """One plain paho MQTT 3.1.1 connection that records what it receives and how its CONNECT was answered."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    clean_session: bool = True
    will: tuple[str, bytes] | None = None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    connack: int | None = None
    disconnected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._connected = threading.Event()
        self._answered = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=self.clean_session, protocol=paho.MQTTv311)
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        if self.will is not None:
            self.client.will_set(self.will[0], self.will[1], qos=1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def connect(self, timeout: float = 5.0) -> bool:
        """True if the broker accepted the CONNECT; False if it refused it or closed the connection."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._answered.wait(timeout)
        if not self._connected.is_set():
            self.close()
            return False
        return True

    def subscribe(self, *filters: str) -> list[int]:
        """Subscribe at QoS 1 and wait for the SUBACK; returns the granted QoS per filter (128 = refused)."""
        granted: list[int] = []
        done = threading.Event()

        def on_subscribe(_c: paho.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object) -> None:
            granted.extend(c.value for c in codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe([(f, 1) for f in filters])
        assert done.wait(5), "no SUBACK"
        return granted

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK (which a refused publish gets too)."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.received]

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT (as a power cut would): the broker sends the Last Will."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()

    def close(self) -> None:
        """Disconnect, stop, and close paho's sockets now (its wake-up pair would wait for the garbage collector)."""
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # noqa: SLF001 - paho has no public way to release them

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.connack = reason.value
        if reason.is_failure:
            self.client.disconnect()  # no automatic retry: a refused peer stays refused
        else:
            self._connected.set()
        self._answered.set()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, _r: object, _p: object) -> None:
        self._answered.set()
        self.disconnected.set()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    """Make peers; all are closed at the end of the test."""
    made: list[Peer] = []

    def make(broker: SecureBroker, user: str | None, *, client_id: str | None = None,
             password: str | None = None, connect: bool = True, **kwargs: object) -> Peer:
        secret = password if password is not None else broker.registry.passwords.get(user or "", None)
        peer = Peer(broker.host, broker.port, client_id or user or "anonymous", username=user, password=secret,
                    **kwargs)  # type: ignore[arg-type]
        made.append(peer)
        if connect:
            assert peer.connect(), f"{user} could not connect to {broker.kind} (CONNACK {peer.connack})"
        return peer

    yield make
    for peer in made:
        try:
            peer.close()
        except Exception:  # already gone
            pass
