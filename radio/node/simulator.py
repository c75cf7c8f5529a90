"""Many simulated loudspeaker nodes in one asyncio loop, each with its own MQTT connection and identity.

Fault injection (:class:`FaultConfig`, each a flag of `radio simulate`): a fraction of nodes offline at
fire time and back later, dropped or duplicated messages, slow or corrupt downloads, clock offsets, and
crashes mid-playback (the node dies without a goodbye and restarts from its journal). Nodes are picked
for each fault by a seeded draw, so a run can be repeated exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import importlib.util
import logging
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

import httpx

from radio.dispatch.messages import EventType
from radio.node.agent import Faults, NodeAgent
from radio.node.config import NodeConfig
from radio.node.fetch import LeanHttp
from radio.node.players import SimulatedPlayback, SimulatedPlayer, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    offline: float = 0.0  # fraction of nodes that drop off the network...
    offline_after_s: float = 0.0  # ...this long after they first connected...
    offline_for_s: float = 30.0  # ...and come back after this long
    drop: float = 0.0  # probability that an incoming command or an outgoing event is lost
    duplicate: float = 0.0  # probability that an incoming command is delivered twice
    slow: float = 0.0  # fraction of nodes whose downloads take slow_s longer
    slow_s: float = 5.0
    corrupt: float = 0.0  # fraction of nodes whose first download of each file is corrupt
    corrupt_always: float = 0.0  # fraction of nodes whose every download is corrupt
    clock_skew_s: float = 0.0  # each node's clock is off by a uniform draw in [-s, +s]
    crash: float = 0.0  # fraction of nodes that crash once, mid-playback...
    crash_restart_s: float = 2.0  # ...and restart this long after
    seed: int = 1

    @property
    def any(self) -> bool:
        return any((self.offline, self.drop, self.duplicate, self.slow, self.corrupt, self.corrupt_always,
                    self.clock_skew_s, self.crash))


class InjectedFaults(Faults):
    def __init__(self, rng: random.Random, faults: FaultConfig, *, slow: bool, corrupt: bool,
                 corrupt_always: bool) -> None:
        self.rng = rng
        self.faults = faults
        self.slow = slow
        self.corrupt = corrupt
        self.corrupt_always = corrupt_always
        self.downloads = 0
        self.rssi = rng.randint(-95, -55)

    def drop_incoming(self) -> bool:
        return self.rng.random() < self.faults.drop

    def duplicate_incoming(self) -> bool:
        return self.rng.random() < self.faults.duplicate

    def drop_outgoing(self) -> bool:
        return self.rng.random() < self.faults.drop

    async def before_download(self) -> None:
        if self.slow:
            await asyncio.sleep(self.faults.slow_s)

    def after_download(self, data: bytes) -> bytes:
        self.downloads += 1
        if self.corrupt_always or (self.corrupt and self.downloads == 1):
            return bytes([data[0] ^ 0xFF]) + data[1:] if data else b"\0"
        return data

    def rssi_dbm(self) -> int | None:
        return self.rssi


class BurstDispatcher:
    """Handles the fleet's received messages once a burst of receipts is over (one per fleet, FIFO).

    A command on a site or zone topic reaches every node of the fleet at once, and this one loop reads their
    copies one socket after another. Had each node parsed, journaled and answered its copy as it came in, the
    last node's receipt would wait for all the others' handling, which real nodes (each its own computer) never
    do. Receipt instants are taken before deferring, so only the handling moves: it starts after ``quiet_s``
    without a new message (or ``max_wait_s`` after the first waiting one) and runs in slices of ``slice_s``,
    so sockets are read between slices (slices of 2 ms made 5,000 nodes' answers trickle out for 12 s: every
    turn of a loop with 5,000 clients costs more than that).
    """

    def __init__(self, quiet_s: float = 0.005, max_wait_s: float = 0.5, slice_s: float = 0.02) -> None:
        self.quiet_s, self.max_wait_s, self.slice_s = quiet_s, max_wait_s, slice_s
        self._pending: deque[Callable[[], None]] = deque()
        self._first = self._last = 0.0
        self._scheduled = False

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def __call__(self, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        if not self._pending:
            self._first = self._last
        self._pending.append(callback)
        if not self._scheduled:
            self._scheduled = True
            loop.call_later(self.quiet_s, self._run)

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._last < self.quiet_s and now - self._first < self.max_wait_s:  # still arriving
            loop.call_later(self.quiet_s - (now - self._last), self._run)
            return
        deadline = time.perf_counter() + self.slice_s
        while self._pending:
            callback = self._pending.popleft()
            try:
                callback()
            except Exception:  # one node's bug must not stop the others' messages
                log.exception("simulated node: handling a message failed")
            if time.perf_counter() > deadline:
                break
        if self._pending:
            self._first = now  # the rest are served slice by slice, reading sockets in between
            loop.call_soon(self._run)
        else:
            self._scheduled = False


GC_EVERY_S = 1.0  # young collections: the pause grows with what was made since the last one (5,000 nodes: ~0.2 s/s)
GC_FULL_EVERY = 600  # rounds: a full collection (then a freeze) every ten minutes
GC_QUIET_BEFORE_START_S = 3.0


class StartBatcher:
    """Starts the fleet's simulated players due at one instant in one callback, in order of their deadlines.

    Each node sleeps until its own start instant (its own clock estimate), then starts. Woken one task at a time,
    a thousand nodes took ~40 ms to all get their turn on this one loop: a start spread that real nodes, each on
    its own computer, do not have. Here each node's ``begin`` (its own checks and ``start_now``, ~10 µs) runs at
    its deadline in one tight loop; its task resumes for the reporting only once no other start is due within
    ``gap_s`` (the resumptions cost more than the starts, and would make the later nodes late).
    """

    def __init__(self, gap_s: float = 0.02, max_hold_s: float = 0.25) -> None:
        self.gap_s, self.max_hold_s = gap_s, max_hold_s
        self._heap: list[tuple[float, int, Callable[[], None], asyncio.Future[None]]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._woken: list[asyncio.Future[None]] = []  # begun, their tasks not resumed yet
        self._held_since = 0.0

    def __call__(self, delay_s: float, begin: Callable[[], None]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        when = loop.time() + delay_s
        future: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, begin, future))
        if when < self._timer_at:
            self._arm(loop)
        return future

    def next_in(self, loop: asyncio.AbstractEventLoop) -> float:
        """Seconds until the next node is due to start (inf if none is)."""
        return self._heap[0][0] - loop.time() if self._heap else float("inf")

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self._heap[0][0] if self._heap else float("inf")
        self._timer = loop.call_at(self._timer_at, self._fire) if self._heap else None

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now + 0.0005  # the loop's timers are this coarse anyway
        if not self._woken:
            self._held_since = now
        while self._heap and self._heap[0][0] <= due:
            _, _, begin, future = heapq.heappop(self._heap)
            if future.done():  # cancelled: the node was stopped or is shutting down
                continue
            try:
                begin()
            except Exception:  # one node's bug must not keep the others from starting
                log.exception("simulated node: starting playback failed")
            self._woken.append(future)
        self._timer = None
        if self.next_in(loop) > self.gap_s or now - self._held_since > self.max_hold_s:
            woken, self._woken = self._woken, []
            for future in woken:
                if not future.done():
                    future.set_result(None)
            self._arm(loop)
        elif self._woken:  # more starts due soon: come back at the next one (or to release these)
            self._timer_at = min(self._heap[0][0], now + self.gap_s)
            self._timer = loop.call_at(self._timer_at, self._fire)
        else:
            self._arm(loop)


def _skip_failed_sniffio_import() -> None:
    """Without sniffio installed, httpcore retries ``import sniffio`` (a scan of sys.path) for every lock it
    sets up, several per request: ~40 % of a fleet's download CPU. A None entry makes that import fail at once,
    which httpcore already handles (it assumes asyncio)."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


class CrashingPlayer:
    """Wraps a node's player: on its first playback it asks the fleet to crash the node part-way through."""

    def __init__(self, inner: SimulatedPlayer, fleet: Fleet, node_id: str, rng: random.Random) -> None:
        self.inner, self.fleet, self.node_id, self.rng = inner, fleet, node_id, rng
        self.name = inner.name
        self.armed = True

    async def start(self, source: Source, volume: int) -> SimulatedPlayback:
        return self.start_now(source, volume)

    def start_now(self, source: Source, volume: int) -> SimulatedPlayback:
        playback = self.inner.start_now(source, volume)
        if self.armed:
            self.armed = False
            after = (source.duration_s - source.offset_s) / self.inner.speed * self.rng.uniform(0.3, 0.7)
            asyncio.get_running_loop().call_later(after, self.fleet.crash, self.node_id)
        return playback


class Fleet:
    def __init__(self, configs: Sequence[NodeConfig], *, speed: float = 1.0, faults: FaultConfig | None = None,
                 http_connections: int = 16, lean_http: bool = True) -> None:
        self.faults = faults or FaultConfig()
        self.speed = speed
        self.http_connections = http_connections
        self.lean_http = lean_http  # False: every download through httpx, as a real node does
        f = self.faults
        ids = [c.node_id for c in configs]
        rng = random.Random(f.seed)

        def pick(fraction: float) -> set[str]:
            return set(rng.sample(ids, round(fraction * len(ids)))) if fraction > 0 else set()

        self.offline_ids, self.slow_ids = pick(f.offline), pick(f.slow)
        self.corrupt_ids, self.corrupt_always_ids, self.crash_ids = pick(f.corrupt), pick(f.corrupt_always), pick(f.crash)
        self.configs = [replace(c, clock_skew_s=rng.uniform(-f.clock_skew_s, f.clock_skew_s)) if f.clock_skew_s else c
                        for c in configs]
        self.players: dict[str, SimulatedPlayer] = {c.node_id: SimulatedPlayer(speed) for c in self.configs}
        self.agents: list[NodeAgent] = []
        self.crashes: Counter[str] = Counter()
        self._index = {c.node_id: i for i, c in enumerate(self.configs)}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._http: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._lean: LeanHttp | None = None
        self._started = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.dispatcher = BurstDispatcher()
        self.starter = StartBatcher()
        self.gc_pauses = 0  # collections that stopped the loop for ≥ 10 ms
        self.gc_pause_max_s = 0.0
        self._gc_started = self._gc_cpu = 0.0

    # running ---------------------------------------------------------------------------------------
    def _agent(self, config: NodeConfig) -> NodeAgent:
        f = self.faults
        rng = random.Random(f"{f.seed}:{config.node_id}:{self.crashes[config.node_id]}")
        player = self.players[config.node_id]
        wrapped = CrashingPlayer(player, self, config.node_id, rng) \
            if config.node_id in self.crash_ids and not self.crashes[config.node_id] else player
        faults = InjectedFaults(rng, f, slow=config.node_id in self.slow_ids, corrupt=config.node_id in self.corrupt_ids,
                                corrupt_always=config.node_id in self.corrupt_always_ids)
        # A restarted node is a new boot: its session counter comes from its journal, plus one.
        return NodeAgent(replace(config, session=int(time.time() * 1000)), wrapped, self._http, faults=faults,
                         download_slots=self._slots, defer=self.dispatcher, fetch=self._lean_get,
                         starter=self.starter)

    async def _lean_get(self, url: str) -> bytes:
        """Plain http:// through the fleet's lean keep-alive client; anything else through httpx."""
        if self._lean is not None and url.startswith("http://"):
            return await self._lean.get(url)
        assert self._http is not None
        async with self._slots or contextlib.nullcontext():
            response = await self._http.get(url)
        response.raise_for_status()
        return response.content

    async def run(self) -> None:
        """Run every agent until cancelled; they share one HTTP connection pool."""
        _skip_failed_sniffio_import()
        limits = httpx.Limits(max_connections=self.http_connections, max_keepalive_connections=self.http_connections)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            self._http = http
            self._slots = asyncio.Semaphore(self.http_connections)
            self._lean = LeanHttp(self.http_connections) if self.lean_http else None
            self.agents = [self._agent(c) for c in self.configs]
            for agent in self.agents:
                self._launch(agent)
            self._started.set()
            collecting = gc.isenabled()
            gc.callbacks.append(self._gc_watch)
            gc.collect()
            gc.freeze()
            gc.disable()
            self._keep(self._collect_garbage())
            for node_id in self.offline_ids:
                self._keep(self._go_offline(node_id))
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                gc.callbacks.remove(self._gc_watch)
                if collecting:
                    gc.enable()
                for task in self._background:
                    task.cancel()
                tasks = list(self._tasks.values())
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, *self._background, return_exceptions=True)
                if self._lean is not None:
                    await self._lean.aclose()

    # the garbage collector ---------------------------------------------------------------------------
    # A thousand agents are millions of long-lived objects (MQTT clients, sockets, journals) and every message makes
    # more. Left to the automatic collector, a full collection stopped the whole fleet's loop for 100-400 ms and
    # even young ones for 20-100 ms, whenever allocations said so: once just as a command arrived (every receipt
    # 0.7 s late), once at start_at (a 60 ms start spread). So the fleet collects itself, when nothing is due: the
    # long-lived objects are frozen out once everyone is connected, and young cycles are collected every second
    # unless a start is near or received messages wait.
    async def _collect_garbage(self) -> None:
        loop = asyncio.get_running_loop()
        frozen = False
        rounds = 0
        give_up = loop.time() + 120  # some node never connects: freeze anyway
        while True:
            await asyncio.sleep(GC_EVERY_S)
            if self.starter.next_in(loop) < GC_QUIET_BEFORE_START_S or self.dispatcher.busy:
                continue
            if not frozen:  # connecting: everything made now lives on, so only freeze it once all are up
                if loop.time() > give_up or all(a.connected.is_set() and a.clock.synced.is_set() for a in self.agents
                                                if a.config.node_id not in self.offline_ids):
                    gc.collect()
                    gc.freeze()
                    frozen = True
                continue
            rounds += 1
            if rounds % GC_FULL_EVERY:
                gc.collect(1)
            else:  # everything made since the last freeze: collected, and what lives on frozen too
                gc.collect()
                gc.freeze()

    def _gc_watch(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            self._gc_cpu = time.thread_time()
            return
        pause = time.perf_counter() - self._gc_started
        if pause >= 0.01:
            self.gc_pauses += 1
            self.gc_pause_max_s = max(self.gc_pause_max_s, pause)
            if pause >= 0.05:
                log.warning("simulated fleet: the garbage collector (generation %d) stopped every node for %.0f ms"
                            " (%.0f ms of it on the CPU)", info.get("generation", -1), pause * 1000,
                            (time.thread_time() - self._gc_cpu) * 1000)

    def _launch(self, agent: NodeAgent) -> None:
        self._tasks[agent.config.node_id] = asyncio.create_task(agent.run(), name=f"node:{agent.config.node_id}")

    def _keep(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_connected(self, timeout_s: float) -> None:
        async def all_connected() -> None:
            await self._started.wait()
            await asyncio.gather(*(a.connected.wait() for a in self.agents if a.config.node_id not in self.offline_ids))

        await asyncio.wait_for(all_connected(), timeout_s)

    async def wait_synced(self, timeout_s: float) -> None:
        async def all_synced() -> None:
            await self._started.wait()
            await asyncio.gather(*(a.clock.synced.wait() for a in self.agents
                                   if a.config.node_id not in self.offline_ids))

        await asyncio.wait_for(all_synced(), timeout_s)

    def agent(self, node_id: str) -> NodeAgent:
        return self.agents[self._index[node_id]]

    # faults ----------------------------------------------------------------------------------------
    async def _go_offline(self, node_id: str) -> None:
        await self.agent(node_id).connected.wait()
        await asyncio.sleep(self.faults.offline_after_s)
        await self.take_offline(node_id, self.faults.offline_for_s)

    async def take_offline(self, node_id: str, for_s: float, *, wait: bool = True) -> None:
        """Cut a node off the broker (no DISCONNECT: its Will fires) for ``for_s``; ``wait=False`` returns at once."""
        agent = self.agent(node_id)
        agent.link_up.clear()
        agent.abort_connection()
        log.info("simulated node %s: link down for %.0f s", node_id, for_s)

        async def back() -> None:
            await asyncio.sleep(for_s)
            self.agent(node_id).link_up.set()
            log.info("simulated node %s: link back", node_id)

        if wait:
            await back()
        else:
            self._keep(back())

    def crash(self, node_id: str) -> None:
        """Kill a node mid-playback (no DISCONNECT, so its Will fires) and boot a new one from its journal later."""
        agent = self.agent(node_id)
        self.crashes[node_id] += 1
        log.info("simulated node %s: crash", node_id)
        agent.crash()
        self._tasks[node_id].cancel()

        async def reboot() -> None:
            await asyncio.sleep(self.faults.crash_restart_s)
            fresh = self._agent(self.configs[self._index[node_id]])
            self.agents[self._index[node_id]] = fresh
            self._launch(fresh)

        self._keep(reboot())

    # console ---------------------------------------------------------------------------------------
    def states(self) -> dict[int | None, Counter[str]]:
        """Per broadcast id, how many nodes are at each step (their last event)."""
        out: dict[int | None, Counter[str]] = {}
        for agent in self.agents:
            for record in agent.journal.records.values():
                if record.command.broadcast_id is None:
                    continue
                step = record.last.event.value if record.last else "queued"
                if step == EventType.STARTED.value:
                    step = "playing"
                out.setdefault(record.command.broadcast_id, Counter())[step] += 1
        return out

    def summary(self) -> str:
        online = sum(a.connected.is_set() for a in self.agents)
        synced = sum(a.clock.synced.is_set() for a in self.agents)
        parts = [f"{online}/{len(self.configs)} online, {synced} synced"]
        order = ["queued", "received", "ready", "playing", "finished", "failed", "rejected", "expired"]
        for broadcast_id, counts in sorted(self.states().items(), key=lambda kv: kv[0] or 0)[-3:]:
            steps = " ".join(f"{k} {counts[k]}" for k in order if counts[k])
            parts.append(f"#{broadcast_id}: {steps}")
        if self.crashes:
            parts.append(f"crashes {sum(self.crashes.values())}")
        if self.gc_pauses:
            parts.append(f"gc pauses ≥10 ms {self.gc_pauses} (max {self.gc_pause_max_s * 1000:.0f} ms)")
        return " | ".join(parts)

    async def report(self, interval_s: float = 2.0, out: TextIO = sys.stdout) -> None:
        """Print the summary whenever it changes (at most every ``interval_s``), until cancelled."""
        last = ""
        while True:
            await asyncio.sleep(interval_s)
            line = self.summary()
            if line != last:
                print(f"{time.strftime('%H:%M:%S')} {line}", file=out, flush=True)
                last = line
