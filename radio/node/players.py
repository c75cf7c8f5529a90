"""Audio players behind one Protocol: the simulated one waits the audio's duration."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol


class Player(Protocol):
    async def play(self, path: Path, duration_s: float) -> None: ...

    async def stop(self) -> None: ...


class SimulatedPlayer:
    """Plays silently for the audio's real duration (measured by the server and bound to the verified sha256)."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed  # >1 plays faster, for tests and benchmarks
        self._current: asyncio.Task[None] | None = None
        self.played: list[Path] = []

    async def play(self, path: Path, duration_s: float) -> None:
        self.played.append(path)
        self._current = asyncio.ensure_future(asyncio.sleep(duration_s / self.speed))
        try:
            await self._current
        except asyncio.CancelledError:
            if self._current.cancelled():  # stopped by a stop command, not by our own cancellation
                return
            raise
        finally:
            self._current = None

    async def stop(self) -> None:
        if self._current is not None:
            self._current.cancel()
