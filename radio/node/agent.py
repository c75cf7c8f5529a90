"""The loudspeaker node agent: subscribe, fetch audio, verify, play at ``start_at``, report.

One agent is one MQTT connection with its own client id. Many agents can share one asyncio loop
(radio/node/simulator.py), which is how `radio simulate` runs a whole fleet in one process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import httpx

from radio.dispatch import topics
from radio.dispatch.messages import BadMessage, Command, CommandType, Event, EventType, NodeState, parse
from radio.dispatch.mqtt import BrokerAddress
from radio.node.players import Player, SimulatedPlayer

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class NodeConfig:
    node_id: str
    zone_id: str
    site: str
    broker: BrokerAddress
    cache_dir: Path
    session: int = field(default_factory=lambda: int(time.time() * 1000))  # boot counter: grows every start
    reconnect_max_s: float = 15.0


class NodeAgent:
    def __init__(self, config: NodeConfig, player: Player | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.player = player or SimulatedPlayer()
        self._http = http
        self._client: aiomqtt.Client | None = None
        self._answers: dict[str, Event] = {}  # command id -> last event sent, to answer duplicates
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    async def close(self) -> None:
        """Cancel commands in flight (used when the agent is being shut down)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # time ----------------------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    # main loop -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with exponential back-off."""
        delay = 1.0
        cfg = self.config
        while True:
            try:
                await self._session()
                delay = 1.0
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning("node %s: broker connection lost (%s); retrying in %.0f s", cfg.node_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, cfg.reconnect_max_s)

    async def _session(self) -> None:
        cfg = self.config
        state_topic = topics.state(cfg.site, cfg.node_id)
        offline = NodeState(node=cfg.node_id, online=False, session=cfg.session).dumps()
        async with aiomqtt.Client(
            cfg.broker.host, cfg.broker.port, identifier=cfg.node_id, clean_session=False,
            username=cfg.broker.username, password=cfg.broker.password, keepalive=30,
            will=aiomqtt.Will(state_topic, offline, qos=1, retain=True),
        ) as client:
            self._client = client
            for topic in topics.node_subscriptions(cfg.site, cfg.zone_id, cfg.node_id):
                await client.subscribe(topic, qos=1)
            online = NodeState(node=cfg.node_id, online=True, session=cfg.session, at=self.now())
            await client.publish(state_topic, online.dumps(), qos=1, retain=True)
            self.connected.set()
            try:
                async for message in client.messages:
                    self._on_message(bytes(message.payload) if isinstance(message.payload, (bytes, bytearray))
                                     else str(message.payload).encode())
            finally:
                self.connected.clear()
                # Clean shutdown says so itself instead of leaving it to the Will; fails harmlessly if the link is gone.
                offline_now = NodeState(node=cfg.node_id, online=False, session=cfg.session, at=self.now())
                try:
                    await asyncio.wait_for(client.publish(state_topic, offline_now.dumps(), qos=1, retain=True), 2)
                except (aiomqtt.MqttError, TimeoutError):
                    pass

    def _on_message(self, payload: bytes) -> None:
        try:
            command = parse(Command, payload)
        except BadMessage as exc:
            log.warning("node %s: ignored a bad command: %s", self.config.node_id, exc)
            return
        task = asyncio.create_task(self.handle(command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # command execution ---------------------------------------------------------------------------
    async def handle(self, command: Command) -> None:
        previous = self._answers.get(command.id)
        if previous is not None:  # QoS 1 redelivery or a server resend: answer, never play twice
            await self._send(previous)
            return
        if self.now() > command.valid_until:
            await self._report(command, EventType.EXPIRED, reason="valid_until passed before it arrived")
            return
        await self._report(command, EventType.RECEIVED)
        if command.type is CommandType.STOP:
            await self.player.stop()
            await self._report(command, EventType.FINISHED)
            return
        if command.audio is None:
            await self._report(command, EventType.REJECTED, reason="play command without audio")
            return
        try:
            path = await self._fetch(command)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            await self._report(command, EventType.FAILED, reason=f"audio download failed: {exc}")
            return
        await self._report(command, EventType.READY)
        if command.start_at is not None:
            await asyncio.sleep(max(0.0, (command.start_at - self.now()).total_seconds()))
        if self.now() > command.valid_until:
            await self._report(command, EventType.EXPIRED, reason="valid_until passed before start")
            return
        await self._report(command, EventType.STARTED)
        began = time.monotonic()
        try:
            await self.player.play(path, command.audio.duration_s)
        except Exception as exc:  # a player failure is a report, not a crash
            await self._report(command, EventType.FAILED, reason=f"playback failed: {exc}",
                               played_s=time.monotonic() - began)
            return
        await self._report(command, EventType.FINISHED, played_s=round(time.monotonic() - began, 3))

    async def _fetch(self, command: Command) -> Path:
        """Download to the local cache (once per hash) and verify sha256; one re-fetch on mismatch."""
        assert command.audio is not None
        audio = command.audio
        target = self.config.cache_dir / f"{audio.sha256}.{audio.format}"
        if target.exists() and _sha256(target.read_bytes()) == audio.sha256:
            return target
        for attempt in (1, 2):
            data = await self._download(audio.url)
            if _sha256(data) == audio.sha256:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".part")
                tmp.write_bytes(data)
                tmp.replace(target)
                return target
            log.warning("node %s: audio %s failed sha256 check (attempt %d)", self.config.node_id,
                        audio.sha256[:12], attempt)
        raise ValueError("audio failed the sha256 check twice")

    async def _download(self, url: str) -> bytes:
        if self._http is not None:
            response = await self._http.get(url)
        else:
            async with httpx.AsyncClient(timeout=30) as http:
                response = await http.get(url)
        response.raise_for_status()
        return response.content

    async def _report(self, command: Command, kind: EventType, *, reason: str | None = None,
                      played_s: float | None = None) -> None:
        event = Event(node=self.config.node_id, command_id=command.id, broadcast_id=command.broadcast_id,
                      event=kind, at=self.now(), reason=reason, played_s=played_s)
        self._answers[command.id] = event
        await self._send(event)

    async def _send(self, event: Event) -> None:
        client = self._client
        if client is None:
            return
        try:
            await client.publish(topics.event(self.config.site, self.config.node_id), event.dumps(), qos=1)
        except aiomqtt.MqttError as exc:
            log.warning("node %s: could not report %s: %s", self.config.node_id, event.event, exc)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
