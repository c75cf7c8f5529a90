"""The loudspeaker node agent: subscribe, fetch audio, verify, play at ``start_at``, report (docs/protocol.md).

One agent is one MQTT connection with its own client id and persistent session. Many agents can share
one asyncio loop (radio/node/simulator.py), which is how `radio simulate` runs a whole fleet in one process.

Time: the agent never trusts its own clock. It estimates the offset to the server NTP-style over MQTT
(radio/dispatch/clock.py) and does everything (``start_at``, ``valid_until``, event times) on the
corrected clock, so a node whose clock is seconds off still starts with the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from radio.dispatch import topics
from radio.dispatch.clock import OffsetEstimator, sample
from radio.dispatch.messages import (
    BadMessage,
    ClockReply,
    ClockRequest,
    Command,
    CommandType,
    Event,
    EventType,
    Heartbeat,
    LinkQuality,
    NodeState,
    Playing,
    parse,
)
from radio.dispatch.mqtt import tls_context
from radio.node.cache import AudioCache, sha256_of
from radio.node.config import NodeConfig
from radio.node.journal import Journal, Record
from radio.node.players import PlaybackError, Player, SimulatedPlayer, Source

__all__ = ["NodeAgent", "NodeConfig", "Faults", "Defer", "Starter", "until_signal"]
log = logging.getLogger(__name__)
# Runs a received message's handling later; the receipt instant is taken before. A lone node uses call_soon; a
# simulated fleet defers until a burst of receipts is over (radio/node/simulator.py).
Defer = Callable[[Callable[[], None]], None]
# Calls ``begin`` in ``delay_s`` and then resolves the awaitable. A lone node sleeps and starts in its own task;
# a fleet starts every simulated player due at one instant in a single batch (radio/node/simulator.py).
Starter = Callable[[float, Callable[[], None]], Awaitable[None]]
RANK = {"normal": 0, "priority": 1, "emergency": 2}
# After starting playback, wait this long before reporting it: in a simulated fleet, hundreds of nodes share
# one event loop, and reporting (JSON, journal, publish) must not delay the next node's start. The report
# carries the instant playback began, so the delay changes nothing on the server.
REPORT_SETTLE_S = 0.05
CLOCK_TIMEOUT_S = 2.0
SYNC_WAIT_S = 3.0  # how long a play command waits for the first clock sync before trusting the raw clock
PUBLISH_TIMEOUT_S = 10.0
GOOD_RTT_S = 0.02  # a clock exchange this quick bounds the offset error to 10 ms; slower ones are retried soon


class FetchError(Exception):
    pass


class Faults:
    """Fault injection hooks; this base injects none (radio/node/simulator.py overrides them)."""

    def drop_incoming(self) -> bool:
        return False

    def duplicate_incoming(self) -> bool:
        return False

    def drop_outgoing(self) -> bool:
        return False

    async def before_download(self) -> None:
        return None

    def after_download(self, data: bytes) -> bytes:
        return data

    def rssi_dbm(self) -> int | None:
        return _wireless_rssi()


class NodeClock:
    """The node's own clock (``local``, possibly wrong) and its estimate of the server's (``now``)."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.skew_s = skew_s  # simulation: how far this device's clock is off the true time
        self.offset_s = 0.0  # server minus local, from clock sync
        self.estimator = OffsetEstimator()
        self.synced = asyncio.Event()
        self.rtt_s: float | None = None

    def local(self) -> float:
        return time.time() + self.skew_s

    def now_ts(self) -> float:
        return self.local() + self.offset_s

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now_ts(), dt.UTC)

    def from_local(self, local: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(local + self.offset_s, dt.UTC)

    def until(self, at: dt.datetime) -> float:
        return at.timestamp() - self.now_ts()


@dataclass
class Current:
    """The playback going on now."""

    command: Command
    playback: Any
    since: dt.datetime
    interrupted: str | None = None  # why it was cut short (stop, preemption)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class NodeAgent:
    def __init__(self, config: NodeConfig, player: Player | None = None, http: httpx.AsyncClient | None = None,
                 *, faults: Faults | None = None, download_slots: asyncio.Semaphore | None = None,
                 defer: Defer | None = None, fetch: Callable[[str], Awaitable[bytes]] | None = None,
                 starter: Starter | None = None) -> None:
        self.config = config
        self._defer = defer
        self._starter = starter
        self._begun: dict[str, Current] = {}  # command id -> its playback, begun by the fleet's start batch
        self._fetch_url = fetch  # a fleet's shared lean client (radio/node/fetch.py); else httpx
        # A fleet sharing one HTTP pool queues its downloads here: httpcore's pool scans its queue per request.
        self._download_slots = download_slots
        self.player: Player = player or SimulatedPlayer()
        self.faults = faults or Faults()
        self._http = http
        self.clock = NodeClock(config.clock_skew_s)
        self.cache = AudioCache(config.cache_dir, config.cache_max_bytes)
        self.journal = Journal(config.state_path, config.journal_keep_s)
        self.session = config.session
        self.volume = config.volume
        self.connected = asyncio.Event()
        self.link_up = asyncio.Event()  # cleared by the simulator to keep the node off the network
        self.link_up.set()
        self._client: aiomqtt.Client | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backlog: list[Event] = []  # events that could not be sent; re-sent after the next connect
        self._clock_waiters: dict[str, asyncio.Future[tuple[ClockReply, float]]] = {}
        self._waiting: dict[str, asyncio.Task[Any]] = {}  # command id -> its task, asleep until start_at
        self._aborts: dict[str, str] = {}  # command id -> why its wait was cancelled
        self._current: Current | None = None
        self._opened = False
        self._booted = time.monotonic()
        self._crashing = False
        cfg = config
        self._evt_topic = topics.event(cfg.site, cfg.node_id)
        self._state_topic = topics.state(cfg.site, cfg.node_id)
        self._reply_topic = topics.clock_reply(cfg.site, cfg.node_id)
        self._inbox = frozenset(topics.node_inbox(cfg.site, cfg.zone_id, cfg.node_id))

    # lifecycle -----------------------------------------------------------------------------------
    def open(self) -> None:
        """Load the journal and boot counter; settle commands a previous run left unfinished."""
        if self._opened:
            return
        self._opened = True
        now = self.clock.now_ts()
        self.journal.open(now)
        state = self.journal.read_state()
        self.session = max(self.session, int(state.get("session", 0)) + 1)
        self.volume = int(state.get("volume", self.volume))
        self.journal.write_state(session=self.session, volume=self.volume)
        for record in list(self.journal.records.values()):
            if record.final:
                continue
            cmd = record.command
            last = record.last.event if record.last else None
            maybe_started = record.started or (
                last is EventType.READY and cmd.start_at is not None and now >= cmd.start_at.timestamp())
            if maybe_started:
                self._report(cmd, EventType.FAILED, reason="interrupted: the node restarted during playback")
            elif now > cmd.valid_until.timestamp():
                self._report(cmd, EventType.EXPIRED, reason="valid_until passed while the node was down")
            else:  # never started: carry on where the previous run stopped
                self._spawn(self._execute(record, self.clock.now()))

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with exponential back-off and jitter."""
        cfg = self.config
        self.open()
        delay = cfg.reconnect_min_s
        try:
            while True:
                await self.link_up.wait()
                try:
                    await self._session()
                    delay = cfg.reconnect_min_s
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    if self.link_up.is_set():
                        log.warning("node %s: broker connection lost (%s); retrying in %.1f s", cfg.node_id, exc,
                                    delay)
                    # Jitter spreads a thousand nodes reconnecting after a broker restart.
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, cfg.reconnect_max_s)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel commands in flight and stop the player (the agent is shutting down or crashing)."""
        current = self._current
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if current is not None and not self._crashing:
            try:
                await current.playback.stop()
            except Exception:  # shutting down anyway
                log.debug("player stop failed", exc_info=True)
        self.journal.close()

    def abort_connection(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a power cut or a lost 4G link would (the Will fires)."""
        client = self._client
        sock = client._client.socket() if client is not None else None  # noqa: SLF001 - no public way to abort
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def crash(self) -> None:
        """Simulation: die now, without a goodbye; the next agent on this config must pick up from the journal."""
        self._crashing = True
        self.abort_connection()

    # MQTT session --------------------------------------------------------------------------------
    async def _session(self) -> None:
        cfg = self.config
        offline = NodeState(node=cfg.node_id, online=False, session=self.session).dumps()
        clean_exit = False
        async with aiomqtt.Client(
            cfg.broker.host, cfg.broker.port, identifier=cfg.node_id, clean_session=False,
            username=cfg.broker.username, password=cfg.broker.password, keepalive=cfg.keepalive_s,
            timeout=PUBLISH_TIMEOUT_S, will=aiomqtt.Will(self._state_topic, offline, qos=1, retain=True),
            tls_context=tls_context(cfg.broker),
        ) as client:
            self._client = client
            # aiomqtt leaves an abrupt disconnect's exception unretrieved when we are already leaving; mark it seen.
            client._disconnected.add_done_callback(lambda f: f.cancelled() or f.exception())  # noqa: SLF001
            background: list[asyncio.Task[Any]] = []
            try:
                await client.subscribe([(t, 1) for t in sorted(self._inbox)])
                await self._publish_state(online=True)
                self.connected.set()
                backlog, self._backlog = self._backlog, []
                for event in backlog:
                    self._spawn(self._send(event))
                background = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._clock_loop()),
                              asyncio.create_task(self._resend_backlog())]
                defer = self._defer or asyncio.get_running_loop().call_soon
                async for message in client.messages:
                    t_local = self.clock.local()  # receipt instant, before any parsing
                    payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                    # Parse and act a moment later: many simulated nodes share this loop, and each one's receipt
                    # instant must not wait for the others' parsing and journal writes.
                    defer(functools.partial(self._dispatch, message.topic.value, payload, t_local))
            except asyncio.CancelledError:
                clean_exit = not self._crashing
                raise
            finally:
                self.connected.clear()
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                if clean_exit:  # a clean shutdown says so itself instead of leaving it to the Will
                    try:
                        await asyncio.wait_for(self._publish_state(online=False), 2)
                    except (aiomqtt.MqttError, TimeoutError):
                        pass
                self._client = None

    async def _publish_state(self, *, online: bool) -> None:
        if self._client is None:
            return
        state = NodeState(node=self.config.node_id, online=online, session=self.session, at=self.clock.now())
        await self._client.publish(self._state_topic, state.dumps(), qos=1, retain=True)

    def _dispatch(self, topic: str, payload: bytes, t_local: float) -> None:
        if topic == self._reply_topic:
            self._on_clock_reply(payload, t_local)
            return
        if topic not in self._inbox:
            # Only what it subscribed to: the embedded broker (amqtt 0.12) also hands a reconnecting
            # persistent session the retained state of every node, which is not a command at all.
            log.debug("node %s: ignored a message on %s (not one of its topics)", self.config.node_id, topic)
            return
        if self.faults.drop_incoming():
            log.debug("node %s: fault injection dropped an incoming command", self.config.node_id)
            return
        for _ in range(2 if self.faults.duplicate_incoming() else 1):
            self._on_command(payload, t_local)

    def _on_command(self, payload: bytes, t_local: float) -> None:
        try:
            command = parse(Command, payload)
        except BadMessage as exc:
            log.warning("node %s: ignored a bad command: %s", self.config.node_id, exc)
            return
        record = self.journal.get(command.id)
        if record is not None:  # QoS 1 redelivery or a server resend: answer, never execute twice
            if record.last is not None:
                self._spawn(self._send(record.last))
            return
        record = self.journal.add_command(command)
        self._spawn(self._execute(record, self.clock.from_local(t_local)))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node %s: command task failed", self.config.node_id, exc_info=task.exception())

    # command execution ---------------------------------------------------------------------------
    async def _execute(self, record: Record, received_at: dt.datetime) -> None:
        command = record.command
        if received_at > command.valid_until:
            self._report(command, EventType.EXPIRED, at=received_at, reason="arrived after valid_until")
            return
        self._report(command, EventType.RECEIVED, at=received_at)
        kind = command.type
        if kind is CommandType.STOP:
            await self.stop_all(f"stopped by command {command.id}")
            self._report(command, EventType.FINISHED)
        elif kind is CommandType.VOLUME:
            if command.volume is None:
                self._report(command, EventType.REJECTED, reason="volume command without volume")
                return
            self.volume = command.volume
            self.journal.write_state(volume=self.volume)
            self._report(command, EventType.FINISHED)
        elif kind is CommandType.SYNC:
            await self.sync_clock()
            self._report(command, EventType.FINISHED)
        elif kind is CommandType.ANNOUNCE:
            try:
                await self._publish_state(online=True)
                await self._publish_heartbeat()
            except aiomqtt.MqttError as exc:
                self._report(command, EventType.FAILED, reason=f"could not announce: {exc}")
                return
            self._report(command, EventType.FINISHED)
        elif kind is CommandType.PLAY:
            await self._play(command)
        elif kind is CommandType.RELAY:
            if command.stream is None:
                self._report(command, EventType.REJECTED, reason="relay command without stream")
                return
            self._report(command, EventType.READY)
            await self._start_at(command, Source(url=command.stream.url, duration_s=command.stream.duration_s))
        else:  # pragma: no cover - the enum is closed; kept for a newer server's types
            self._report(command, EventType.REJECTED, reason=f"unsupported command type {kind}")

    async def _play(self, command: Command) -> None:
        audio = command.audio
        if audio is None:
            self._report(command, EventType.REJECTED, reason="play command without audio")
            return
        self.cache.pin(audio.sha256, audio.format)
        try:
            try:
                path = await self._fetch(command)
            except FetchError as exc:
                self._report(command, EventType.FAILED, reason=str(exc))
                return
            self._report(command, EventType.READY)
            await self._start_at(command, Source(path=path, duration_s=audio.duration_s))
        finally:
            self.cache.unpin(audio.sha256, audio.format)

    async def _start_at(self, command: Command, source: Source) -> None:
        """Wait for ``start_at`` on the corrected clock, then start; a late node starts at once if still valid.

        If something plays at that moment: a higher priority preempts it; otherwise the command waits for it to
        end (queued, as the next part of a broadcast does) and starts then, unless valid_until passes first.
        """
        if command.start_at is not None:
            if not self.clock.synced.is_set():
                try:
                    await asyncio.wait_for(self.clock.synced.wait(), SYNC_WAIT_S)
                except TimeoutError:
                    log.warning("node %s: clock not synced yet; trusting the local clock", self.config.node_id)
            delay = self.clock.until(command.start_at) - self.config.output_latency_s
            if delay > 0:
                start_now: Callable[[Source, int], Any] | None = getattr(self.player, "start_now", None)
                waiting: Awaitable[Any] = asyncio.sleep(delay) if self._starter is None or start_now is None else \
                    self._starter(delay, functools.partial(self._begin, command, source, start_now))
                if not await self._abortable(command, waiting, "before start"):
                    return
        mine = self._begun.pop(command.id, None)
        if mine is None:
            mine = await self._start_now(command, source)
            if mine is None:
                return
        playback, started = mine.playback, mine.since
        try:
            await asyncio.sleep(REPORT_SETTLE_S)
            self._report(command, EventType.STARTED, at=started)
            try:
                played = await playback.wait()
            except PlaybackError as exc:
                self._report(command, EventType.FAILED, reason=f"playback failed: {exc}",
                             played_s=round((self.clock.now() - started).total_seconds(), 3))
                return
        finally:
            mine.ended.set()
            if self._current is mine:
                self._current = None
        if mine.interrupted:
            self._report(command, EventType.FAILED, reason=mine.interrupted, played_s=played)
        else:
            self._report(command, EventType.FINISHED, played_s=played)

    def _begin(self, command: Command, source: Source, start_now: Callable[[Source, int], Any]) -> None:
        """The fleet's start batch, at this node's start instant: start at once if nothing else plays.

        Anything else (expired, something playing, a failing player) is left to the task, which applies the
        usual rules when it wakes.
        """
        current = self._current
        now = self.clock.now()  # a µs before the start itself: one clock read less per node of a batch
        if now > command.valid_until or (current is not None and not current.playback.done()):
            return
        try:
            playback = start_now(source, self.volume)
        except PlaybackError:
            return
        self._current = self._begun[command.id] = Current(command, playback, now)
        self._waiting.pop(command.id, None)  # it plays: a stop now stops the playback, not the wait

    async def _start_now(self, command: Command, source: Source) -> Current | None:
        """Start now: preempt a lower priority, or wait for the same or a higher one to end (if still valid)."""
        while True:
            if self.clock.now() > command.valid_until:
                self._report(command, EventType.EXPIRED, reason="valid_until passed before start")
                return None
            current = self._current
            if current is None or current.playback.done():
                break
            if RANK[command.priority] > RANK[current.command.priority]:
                current.interrupted = f"preempted by {command.priority} command {command.id}"
                await current.playback.stop()
                break
            remaining = command.valid_until.timestamp() - self.clock.now_ts()
            waited = asyncio.wait_for(current.ended.wait(), max(0.0, remaining))
            try:
                if not await self._abortable(command, waited, f"while {current.command.id} played"):
                    return None
            except TimeoutError:
                self._report(command, EventType.EXPIRED,
                             reason=f"valid_until passed while {current.command.priority} command "
                                    f"{current.command.id} played")
                return None
        try:
            playback = await self.player.start(source, self.volume)
        except PlaybackError as exc:
            self._report(command, EventType.FAILED, reason=f"playback failed: {exc}")
            return None
        current = self._current = Current(command, playback, self.clock.now())
        return current

    async def _abortable(self, command: Command, waiting: Awaitable[Any], when: str) -> bool:
        """Await ``waiting``; False (after reporting ``failed``) if stop_all cancelled it meanwhile."""
        task = asyncio.current_task()
        assert task is not None
        self._waiting[command.id] = task
        try:
            await waiting
        except asyncio.CancelledError:
            reason = self._aborts.pop(command.id, None)
            if reason is None:
                raise
            task.uncancel()
            self._report(command, EventType.FAILED, reason=f"{reason} {when}")
            return False
        finally:
            self._waiting.pop(command.id, None)
        return True

    async def stop_all(self, reason: str) -> None:
        """Stop what plays and cancel what waits to start; each reports ``failed`` with ``reason``."""
        for command_id, task in list(self._waiting.items()):
            self._aborts[command_id] = reason
            task.cancel()
        current = self._current
        if current is not None and not current.playback.done():
            current.interrupted = reason
            await current.playback.stop()

    # audio -----------------------------------------------------------------------------------------
    async def _fetch(self, command: Command) -> Path:
        """From the cache, or downloaded and verified; a corrupt download is fetched once more, then fails.

        Network errors are retried with back-off until ``valid_until``: the server may be restarting.
        """
        assert command.audio is not None
        audio = command.audio
        hit = self.cache.lookup(audio.sha256, audio.format)
        if hit is not None:
            return hit
        corrupt = 0
        delay = 0.5
        while True:
            try:
                data = await self._download(audio.url)
            except (httpx.HTTPError, OSError) as exc:
                if self.clock.now() + dt.timedelta(seconds=delay) > command.valid_until:
                    raise FetchError(f"audio download failed: {exc}") from None
                log.warning("node %s: audio download failed (%s); retrying in %.1f s", self.config.node_id, exc,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            digest = sha256_of(data) if len(data) < 1 << 20 else await asyncio.to_thread(sha256_of, data)
            if digest == audio.sha256:
                return self.cache.store(audio.sha256, audio.format, data)
            corrupt += 1
            log.warning("node %s: audio %s failed the sha256 check (attempt %d)", self.config.node_id,
                        audio.sha256[:12], corrupt)
            if corrupt >= 2:
                raise FetchError(f"audio failed the sha256 check {corrupt} times (got {digest[:12]}…)")

    async def _download(self, url: str) -> bytes:
        await self.faults.before_download()
        if self._fetch_url is not None:
            return self.faults.after_download(await self._fetch_url(url))
        if self._download_slots is not None:
            async with self._download_slots:
                response = await self._get(url)
        else:
            response = await self._get(url)
        response.raise_for_status()
        return self.faults.after_download(response.content)

    async def _get(self, url: str) -> httpx.Response:
        if self._http is not None:
            return await self._http.get(url)
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.get(url)

    # events ----------------------------------------------------------------------------------------
    def _report(self, command: Command, kind: EventType, *, at: dt.datetime | None = None, reason: str | None = None,
                played_s: float | None = None) -> None:
        event = Event(node=self.config.node_id, command_id=command.id, broadcast_id=command.broadcast_id,
                      event=kind, at=at or self.clock.now(), reason=reason[:500] if reason else None,
                      played_s=played_s)
        self.journal.add_event(event)
        self._spawn(self._send(event))  # tasks start in creation order, so events leave in order

    async def _resend_backlog(self) -> None:
        """Events whose publish failed while still connected (PUBACK timed out) are sent again."""
        while True:
            await asyncio.sleep(2.0)
            if self._backlog and self._client is not None:
                backlog, self._backlog = self._backlog, []
                for event in backlog:
                    self._spawn(self._send(event))

    async def _send(self, event: Event) -> None:
        if self.faults.drop_outgoing():
            return  # lost on the way; the server's resend makes the node answer again
        client = self._client
        if client is None:
            self._backlog.append(event)
            return
        try:
            await client.publish(self._evt_topic, event.dumps(), qos=1)
        except aiomqtt.MqttError as exc:
            log.info("node %s: could not report %s now (%s); will resend", self.config.node_id, event.event, exc)
            self._backlog.append(event)

    # heartbeat -------------------------------------------------------------------------------------
    def heartbeat(self) -> Heartbeat:
        current = self._current
        playing = None if current is None else Playing(
            command_id=current.command.id, broadcast_id=current.command.broadcast_id,
            priority=current.command.priority, title=current.command.title, since=current.since)
        rtt = self.clock.rtt_s
        return Heartbeat(
            node=self.config.node_id, session=self.session, at=self.clock.now(), volume=self.volume, playing=playing,
            link=LinkQuality(rtt_ms=None if rtt is None else round(rtt * 1000, 2), rssi_dbm=self.faults.rssi_dbm()),
            clock_offset_ms=round(self.clock.offset_s * 1000, 3), clock_synced=self.clock.synced.is_set(),
            player=self.player.name, uptime_s=round(time.monotonic() - self._booted, 1), cache_bytes=self.cache.size,
        )

    async def _publish_heartbeat(self) -> None:
        if self._client is not None:
            await self._client.publish(topics.heartbeat(self.config.site, self.config.node_id),
                                       self.heartbeat().dumps(), qos=0)

    async def _heartbeats(self) -> None:
        # The first one waits for the first clock sync so it reports a real offset.
        try:
            await asyncio.wait_for(self.clock.synced.wait(), SYNC_WAIT_S)
        except TimeoutError:
            pass
        while True:
            try:
                await self._publish_heartbeat()
            except aiomqtt.MqttError:
                return  # the session is ending
            self.journal.prune(self.clock.now_ts())
            await asyncio.sleep(self.config.heartbeat_s * random.uniform(0.9, 1.1))

    # clock sync ------------------------------------------------------------------------------------
    async def _clock_loop(self) -> None:
        await asyncio.sleep(random.uniform(0, 0.2))  # spread a fleet's first requests a little
        retry = 2.0
        while True:
            await self.sync_clock()
            rtt = self.clock.rtt_s
            if rtt is not None and rtt <= GOOD_RTT_S:
                await asyncio.sleep(self.config.clock_sync_s * random.uniform(0.9, 1.1))
            else:  # a busy moment (a fleet connecting, a loaded link): try again soon for a quicker exchange
                await asyncio.sleep(min(retry, self.config.clock_sync_s) * random.uniform(0.5, 1.5))
                retry *= 2

    async def sync_clock(self) -> float | None:
        """A few request/response exchanges; the offset of the quickest one wins. Returns it, or None."""
        client = self._client
        if client is None:
            return None
        topic = topics.clock_request(self.config.site, self.config.node_id)
        loop = asyncio.get_running_loop()
        for i in range(self.config.clock_samples):
            if i:
                await asyncio.sleep(random.uniform(0.02, 0.08))
            ident = uuid.uuid4().hex[:16]
            fut: asyncio.Future[tuple[ClockReply, float]] = loop.create_future()
            self._clock_waiters[ident] = fut
            t0 = self.clock.local()
            try:
                await client.publish(topic, ClockRequest(node=self.config.node_id, id=ident, t0=t0).dumps(), qos=0)
                reply, t3 = await asyncio.wait_for(fut, CLOCK_TIMEOUT_S)
            except (aiomqtt.MqttError, TimeoutError):
                continue
            finally:
                self._clock_waiters.pop(ident, None)
            self.clock.estimator.add(sample(t0, reply.t1, reply.t2, t3))
        best = self.clock.estimator.best(self.clock.local())
        if best is None:
            log.warning("node %s: clock sync got no answer", self.config.node_id)
            return None
        self.clock.offset_s, self.clock.rtt_s = best.offset_s, best.delay_s
        if not self.clock.synced.is_set():
            log.info("node %s: clock offset %+.1f ms (round trip %.1f ms)", self.config.node_id,
                     best.offset_s * 1000, best.delay_s * 1000)
        self.clock.synced.set()
        return best.offset_s

    def _on_clock_reply(self, payload: bytes, t3: float) -> None:
        try:
            reply = parse(ClockReply, payload)
        except BadMessage as exc:
            log.warning("node %s: ignored a bad clock reply: %s", self.config.node_id, exc)
            return
        fut = self._clock_waiters.get(reply.id)
        if fut is not None and not fut.done():
            fut.set_result((reply, t3))


async def until_signal(coro: Coroutine[Any, Any, None]) -> None:
    """Run until done, Ctrl+C or SIGTERM; a signal cancels it, so nodes say goodbye (offline) on the way out."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def _wireless_rssi() -> int | None:
    """Signal level of the first Wi-Fi interface from /proc/net/wireless, if there is one."""
    try:
        lines = Path("/proc/net/wireless").read_text().splitlines()[2:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4:
            try:
                level = int(float(fields[3].rstrip(".")))
            except ValueError:
                continue
            return level if -150 <= level <= 0 else None
    return None
