"""Helpers for node tests: a miniature service side of protocol v1 on a real broker, and audio served in memory."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.db import transaction
from radio.dispatch import topics
from radio.dispatch.clock import ClockResponder
from radio.dispatch.messages import AudioRef, Command, CommandType, Event, Heartbeat, NodeState, StreamRef, parse
from radio.dispatch.mqtt import BrokerAddress, MqttClient
from radio.models import Broadcast, BroadcastStatus, Bulletin, BulletinStatus, Delivery, Node, Zone
from radio.node.agent import NodeAgent
from radio.node.config import NodeConfig
from radio.node.players import SimulatedPlayer
from radio.node.simulator import Fleet
from radio.service import Service
from tests.conftest import Mosquitto, start_mosquitto

T = TypeVar("T")
SITE = "tx"
AUDIO = b"ID3" + bytes(range(256)) * 64  # any bytes do: the simulated player never decodes them
AUDIO_SHA = hashlib.sha256(AUDIO).hexdigest()


class FakeServer:
    """The service side in miniature: publishes commands, answers clock requests, collects what nodes send."""

    def __init__(self, url: str) -> None:
        self.clock = ClockResponder(SITE)
        self.mqtt = MqttClient(BrokerAddress.parse(url), f"fake-server-{uuid.uuid4().hex[:8]}",
                               on_message=self.clock.wrap(self._on_message),
                               subscriptions=topics.service_subscriptions(SITE))
        self.clock.publish = lambda topic, payload: self.mqtt.publish(topic, payload, qos=0)
        self.events: list[Event] = []
        self.states: list[NodeState] = []
        self.heartbeats: list[Heartbeat] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.mqtt.connect(10)

    def close(self) -> None:
        self.mqtt.close()

    def _on_message(self, topic: str, payload: bytes) -> None:
        kind = topics.kind_of(topic)
        with self._lock:
            if kind == "evt":
                self.events.append(parse(Event, payload))
            elif kind == "state":
                self.states.append(parse(NodeState, payload))
            elif kind == "hb":
                self.heartbeats.append(parse(Heartbeat, payload))

    def send(self, command: Command, topic: str | None = None) -> None:
        self.mqtt.publish(topic or topics.cmd_all(SITE), command.dumps(), qos=1).wait_for_publish(5)

    def steps(self, command_id: str, node: str | None = None) -> list[str]:
        with self._lock:
            return [e.event.value for e in self.events if e.command_id == command_id and (node is None or e.node == node)]

    def event(self, command_id: str, kind: str, node: str | None = None) -> Event:
        with self._lock:
            return next(e for e in self.events if e.command_id == command_id and e.event.value == kind
                        and (node is None or e.node == node))

    async def until(self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "a condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; events: "
                                     f"{[(e.node, e.command_id[:6], e.event.value, e.reason) for e in self.events]}")
            await asyncio.sleep(0.02)


def command(kind: CommandType = CommandType.PLAY, *, lead_s: float = 0.5, valid_s: float = 30.0, duration_s: float = 0.4,
            priority: str = "normal", broadcast_id: int | None = 1, ident: str | None = None, **extra: object) -> Command:
    """A command issued now that starts ``lead_s`` from now (server clock = true time here)."""
    now = dt.datetime.now(dt.UTC)
    start = now + dt.timedelta(seconds=lead_s)
    fields: dict[str, object] = {
        "id": ident or uuid.uuid4().hex, "type": kind, "broadcast_id": broadcast_id, "priority": priority,
        "title": "thử", "issued_at": now, "start_at": start, "valid_until": start + dt.timedelta(seconds=valid_s)}
    if kind is CommandType.PLAY:
        fields["audio"] = AudioRef(url=f"http://audio.test/{AUDIO_SHA}.mp3", sha256=AUDIO_SHA, duration_s=duration_s)
    if kind is CommandType.RELAY:
        fields["stream"] = StreamRef(url="http://stream.test/live", duration_s=duration_s)
    fields.update(extra)
    return Command.model_validate(fields)


class AudioServer:
    """Serves AUDIO for any URL through httpx's mock transport, counting requests."""

    def __init__(self) -> None:
        self.requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(200, content=AUDIO)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def node_config(url: str, tmp: Path, node_id: str = "n1", **extra: object) -> NodeConfig:
    values: dict[str, object] = {"node_id": node_id, "zone_id": "z1", "site": SITE, "broker": BrokerAddress.parse(url),
                                 "cache_dir": tmp / node_id, "heartbeat_s": 0.5, "reconnect_min_s": 0.2,
                                 "reconnect_max_s": 1.0}
    values.update(extra)
    return NodeConfig(**values)  # type: ignore[arg-type]


class Running:
    """An agent running as a task on the test's loop."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.task = asyncio.create_task(agent.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def start_agent(config: NodeConfig, http: httpx.AsyncClient, player: SimulatedPlayer | None = None,
                **kw: object) -> Running:
    return Running(NodeAgent(config, player or SimulatedPlayer(), http, **kw))  # type: ignore[arg-type]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = start_mosquitto(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def server(broker: Mosquitto) -> Iterator[FakeServer]:
    s = FakeServer(broker.url)
    s.start()
    yield s
    s.close()


class FleetThread:
    """A simulated fleet on its own event loop thread, next to a service running in the test process."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(self.fleet.run())
        try:
            self.loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)


def fleet_configs(factory: sessionmaker[Session], url: str, tmp: Path, site: str) -> list[NodeConfig]:
    with factory() as session:
        nodes = list(session.scalars(select(Node).order_by(Node.id)))
    return [NodeConfig(node_id=n.id, zone_id=n.zone_id, site=site, broker=BrokerAddress.parse(url),
                       cache_dir=tmp / "nodes" / n.id, heartbeat_s=5.0, reconnect_min_s=0.2, reconnect_max_s=2.0)
            for n in nodes]


def add_nodes(factory: sessionmaker[Session], count: int, zone: str = "sim") -> list[str]:
    """Register ``count`` extra loudspeaker clusters in a zone of their own."""
    ids = [f"sim-{i:04d}" for i in range(count)]
    with transaction(factory) as session:
        if session.get(Zone, zone) is None:
            session.add(Zone(id=zone, name="Mô phỏng"))
        session.add_all(Node(id=i, zone_id=zone, name=i) for i in ids)
    return ids


def air_short(service: Service, text: str = "Thử loa.") -> int:
    """Air a tiny approved bulletin on the whole ward now (the demo path airs the shortest approved one)."""
    with transaction(service.factory) as session:
        session.add(Bulletin(id=f"thu-{uuid.uuid4().hex[:8]}", title="Thử loa", text=text,
                             status=BulletinStatus.APPROVED))
    broadcast_id = service.air_demo()
    assert broadcast_id is not None
    return broadcast_id


def deliveries(factory: sessionmaker[Session], broadcast_id: int) -> list[Delivery]:
    with factory() as session:
        return list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)
                                    .order_by(Delivery.node_id)))


def settled(factory: sessionmaker[Session], broadcast_id: int) -> bool:
    with factory() as session:
        return session.get_one(Broadcast, broadcast_id).status != BroadcastStatus.ON_AIR
