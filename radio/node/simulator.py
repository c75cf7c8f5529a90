"""Many simulated loudspeaker nodes in one asyncio loop, each with its own MQTT connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx

from radio.node.agent import NodeAgent, NodeConfig
from radio.node.players import SimulatedPlayer

log = logging.getLogger(__name__)


class Fleet:
    def __init__(self, configs: Sequence[NodeConfig], *, speed: float = 1.0) -> None:
        self.configs = list(configs)
        self.speed = speed
        self.agents: list[NodeAgent] = []

    async def run(self) -> None:
        """Run every agent until cancelled; they share one HTTP connection pool."""
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            self.agents = [NodeAgent(c, SimulatedPlayer(self.speed), http) for c in self.configs]
            tasks = [asyncio.create_task(a.run(), name=f"node:{a.config.node_id}") for a in self.agents]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(*(a.close() for a in self.agents))

    async def wait_connected(self, timeout_s: float) -> None:
        async def all_connected() -> None:
            while len(self.agents) < len(self.configs):
                await asyncio.sleep(0.05)
            await asyncio.gather(*(a.connected.wait() for a in self.agents))

        await asyncio.wait_for(all_connected(), timeout_s)
