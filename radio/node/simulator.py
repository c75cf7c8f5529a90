"""Many simulated loudspeaker nodes in one asyncio loop, each with its own MQTT connection and identity.

Fault injection (:class:`FaultConfig`, each a flag of `radio simulate`): a fraction of nodes offline at
fire time and back later, dropped or duplicated messages, slow or corrupt downloads, clock offsets, and
crashes mid-playback (the node dies without a goodbye and restarts from its journal). Nodes are picked
for each fault by a seeded draw, so a run can be repeated exactly.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

import httpx

from radio.dispatch.messages import EventType
from radio.node.agent import Faults, NodeAgent
from radio.node.config import NodeConfig
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


class CrashingPlayer:
    """Wraps a node's player: on its first playback it asks the fleet to crash the node part-way through."""

    def __init__(self, inner: SimulatedPlayer, fleet: Fleet, node_id: str, rng: random.Random) -> None:
        self.inner, self.fleet, self.node_id, self.rng = inner, fleet, node_id, rng
        self.name = inner.name
        self.armed = True

    async def start(self, source: Source, volume: int) -> SimulatedPlayback:
        playback = await self.inner.start(source, volume)
        if self.armed:
            self.armed = False
            after = (source.duration_s - source.offset_s) / self.inner.speed * self.rng.uniform(0.3, 0.7)
            asyncio.get_running_loop().call_later(after, self.fleet.crash, self.node_id)
        return playback


class Fleet:
    def __init__(self, configs: Sequence[NodeConfig], *, speed: float = 1.0, faults: FaultConfig | None = None,
                 http_connections: int = 8) -> None:
        self.faults = faults or FaultConfig()
        self.speed = speed
        self.http_connections = http_connections
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
        self._started = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

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
                         download_slots=self._slots)

    async def run(self) -> None:
        """Run every agent until cancelled; they share one HTTP connection pool."""
        limits = httpx.Limits(max_connections=self.http_connections, max_keepalive_connections=self.http_connections)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            self._http = http
            self._slots = asyncio.Semaphore(self.http_connections)
            self.agents = [self._agent(c) for c in self.configs]
            for agent in self.agents:
                self._launch(agent)
            self._started.set()
            # Thousands of long-lived objects (agents, journals, clients): keep them out of the garbage collector's
            # generations, so a full collection never stalls the loop for tens of ms just when nodes must start.
            gc.collect()
            gc.freeze()
            for node_id in self.offline_ids:
                self._keep(self._go_offline(node_id))
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                for task in self._background:
                    task.cancel()
                tasks = list(self._tasks.values())
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, *self._background, return_exceptions=True)

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
