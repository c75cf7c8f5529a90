"""Audio players behind one Protocol: real ones drive an external program, the simulated one only keeps time.

``detect_player("auto")`` tries, in order, mpv, ffplay, ffmpeg to PulseAudio, ffmpeg to ALSA, aplay and
paplay (both fed PCM by ffmpeg), and keeps the first that really plays 0.1 s of silence on this device;
if none does, it falls back to :class:`SimulatedPlayer` and says why each candidate was refused.
ffmpeg is the system's, or else the one shipped by imageio-ffmpeg (which has no ffplay and no ALSA
output, but has PulseAudio). ``null`` decodes in real time into ffmpeg's null muxer: no sound, real
timing, for headless machines and tests.

Volume (0–100) is applied when a playback starts; a later `volume` command takes effect on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
PCM_RATE, PCM_CHANNELS = 48000, 2  # what aplay/paplay are fed: every sound card takes it
PROBE_TIMEOUT_S = 5.0


class PlaybackError(Exception):
    """The player could not play the source; the message is the reason reported to the server."""


@dataclass(frozen=True, kw_only=True)
class Source:
    """A verified local file, or a live stream URL (relay), played for ``duration_s`` from ``offset_s``."""

    duration_s: float
    path: Path | None = None
    url: str | None = None
    offset_s: float = 0.0

    @property
    def input(self) -> str:
        if self.path is not None:
            return str(self.path)
        assert self.url is not None
        return self.url


class Playback(Protocol):
    started_at: float  # time.time() when output began

    def done(self) -> bool: ...

    async def wait(self) -> float:
        """Seconds played when it ends by itself; raises PlaybackError on failure."""
        ...

    async def stop(self) -> float:
        """Stop now; returns seconds played."""
        ...


class Player(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self, source: Source, volume: int) -> Playback: ...


# simulated ------------------------------------------------------------------------------------------
class SimulatedPlayback:
    """Keeps time only. Its end timer is set when someone waits for it, not at start: a fleet starts a thousand
    of these within milliseconds, and each start must be as cheap as possible (the start spread is what it costs)."""

    def __init__(self, duration_s: float, speed: float) -> None:
        self.started_at = time.time()
        self._speed = speed
        self._ends_at = self.started_at + duration_s / speed
        self._ended_at: float | None = None
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _finish(self) -> None:
        if self._ended_at is None:
            self._ended_at = min(time.time(), self._ends_at)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def done(self) -> bool:
        if self._ended_at is None and time.time() >= self._ends_at:
            self._finish()
        return self._ended_at is not None

    def _played(self) -> float:
        return round(((self._ended_at or time.time()) - self.started_at) * self._speed, 3)

    async def wait(self) -> float:
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            if self._ended_at is not None:
                self._done.set_result(None)
            else:
                self._timer = loop.call_later(max(0.0, self._ends_at - time.time()), self._finish)
        await asyncio.shield(self._done)
        return self._played()

    async def stop(self) -> float:
        if self._timer is not None:
            self._timer.cancel()
        self._finish()
        return self._played()


class SimulatedPlayer:
    """Plays silently for the audio's real duration (measured by the server and bound to the verified sha256)."""

    name = "simulated"

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed  # >1 plays faster, for tests and benchmarks
        self.starts: list[tuple[str, float]] = []  # (source, true time.time() at start): what really played
        self.volumes: list[int] = []

    @property
    def played(self) -> list[str]:
        return [s for s, _ in self.starts]

    def start_now(self, source: Source, volume: int) -> SimulatedPlayback:
        """Start synchronously (a fleet's start batch calls this for every node due at one instant)."""
        playback = SimulatedPlayback(max(0.0, source.duration_s - source.offset_s), self.speed)
        self.starts.append((source.input, playback.started_at))
        self.volumes.append(volume)
        return playback

    async def start(self, source: Source, volume: int) -> SimulatedPlayback:
        return self.start_now(source, volume)


# external programs ----------------------------------------------------------------------------------
def ffmpeg_exe() -> str | None:
    """The system's ffmpeg, else imageio-ffmpeg's bundled binary."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return None


def _ffmpeg_input(source: Source | None) -> list[str]:
    if source is None:  # the probe: 0.1 s of silence
        return ["-f", "lavfi", "-t", "0.1", "-i", "anullsrc=r=48000:cl=stereo"]
    args = ["-ss", f"{source.offset_s:.3f}"] if source.offset_s > 0 else []
    if source.url is not None:  # a live relay: ride out short drops of the upstream
        args += ["-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "5"]
    return [*args, "-t", f"{source.duration_s - source.offset_s:.3f}", "-i", source.input]


@dataclass(frozen=True)
class Backend:
    """How to play through one program: argv for the player and, for aplay/paplay, a PCM decoder before it."""

    name: str
    exe: str
    ffmpeg: str | None = None

    def commands(self, source: Source | None, volume: int) -> list[list[str]]:
        gain = f"volume={volume / 100:.2f}"
        quiet = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        if self.name == "mpv":
            src = "av://lavfi:anullsrc=d=0.1" if source is None else source.input
            args = [self.exe, "--no-video", "--no-terminal", "--really-quiet", f"--volume={volume}"]
            if source is not None:
                args += [f"--start=+{source.offset_s:.3f}", f"--length={source.duration_s - source.offset_s:.3f}"]
            return [[*args, src]]
        if self.name == "ffplay":
            if source is None:
                return [[self.exe, "-nodisp", "-autoexit", "-loglevel", "error", "-f", "lavfi", "anullsrc=d=0.1"]]
            return [[self.exe, "-nodisp", "-autoexit", "-loglevel", "error", "-volume", str(volume),
                     "-ss", f"{source.offset_s:.3f}", "-t", f"{source.duration_s - source.offset_s:.3f}", source.input]]
        if self.name in ("ffmpeg-pulse", "ffmpeg-alsa", "null"):
            out = {"ffmpeg-pulse": ["-f", "pulse", "radio"], "ffmpeg-alsa": ["-f", "alsa", "default"],
                   "null": ["-f", "null", "-"]}[self.name]
            # A sound card paces itself; the null muxer does not (arealtime does; -re ends half a second early).
            filters = f"{gain},arealtime" if self.name == "null" else gain
            return [[self.exe, *quiet, *_ffmpeg_input(source), "-af", filters, *out]]
        # aplay / paplay: ffmpeg decodes to raw PCM on a pipe
        assert self.ffmpeg is not None
        decode = [self.ffmpeg, *quiet, *_ffmpeg_input(source), "-af", gain, "-f", "s16le", "-ac", str(PCM_CHANNELS),
                  "-ar", str(PCM_RATE), "-"]
        if self.name == "aplay":
            sink = [self.exe, "-q", "-t", "raw", "-f", "S16_LE", "-c", str(PCM_CHANNELS), "-r", str(PCM_RATE)]
        else:
            sink = [self.exe, "--raw", "--format=s16le", f"--channels={PCM_CHANNELS}", f"--rate={PCM_RATE}"]
        return [decode, sink]


def candidates() -> tuple[list[Backend], list[str]]:
    """Backends whose programs exist here, in order of preference, and why the others are out."""
    found: list[Backend] = []
    missing: list[str] = []
    ffmpeg = ffmpeg_exe()
    devices = ""
    if ffmpeg:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            devices = subprocess.run([ffmpeg, "-hide_banner", "-devices"], capture_output=True, text=True,
                                     timeout=PROBE_TIMEOUT_S).stdout
    for name in ("mpv", "ffplay"):
        exe = shutil.which(name)
        (found.append(Backend(name, exe)) if exe else missing.append(f"{name}: not installed"))
    for name, device in (("ffmpeg-pulse", "pulse"), ("ffmpeg-alsa", "alsa")):
        if not ffmpeg:
            missing.append(f"{name}: no ffmpeg")
        elif not any(line.split()[1:2] == [device] and "E" in line.split()[0] for line in devices.splitlines()
                     if len(line.split()) >= 2):
            missing.append(f"{name}: this ffmpeg has no {device} output")
        else:
            found.append(Backend(name, ffmpeg))
    for name in ("aplay", "paplay"):
        exe = shutil.which(name)
        if not exe:
            missing.append(f"{name}: not installed")
        elif not ffmpeg:
            missing.append(f"{name}: no ffmpeg to decode MP3 for it")
        else:
            found.append(Backend(name, exe, ffmpeg))
    return found, missing


def probe(backend: Backend) -> str | None:
    """Play 0.1 s of silence; None if that worked, else the reason."""
    cmds = backend.commands(None, 0)
    try:
        if len(cmds) == 1:
            result = subprocess.run(cmds[0], capture_output=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
            rc, err = result.returncode, result.stderr
        else:
            with subprocess.Popen(cmds[0], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL) as dec:
                sink = subprocess.run(cmds[1], stdin=dec.stdout, capture_output=True, timeout=PROBE_TIMEOUT_S)
                dec.wait(PROBE_TIMEOUT_S)
            rc, err = sink.returncode, sink.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{backend.name}: {exc}"
    if rc != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {rc}"]
        return f"{backend.name}: {tail[0][:200]}"
    return None


class ProcessPlayback:
    def __init__(self, procs: Sequence[asyncio.subprocess.Process], name: str, limit_s: float) -> None:
        self.started_at = time.time()
        self._procs = list(procs)
        self._name = name
        self._stopped = False
        self._ended_at: float | None = None
        self._stderr: list[bytes] = []
        self._readers = [asyncio.ensure_future(self._drain(p)) for p in self._procs if p.stderr is not None]
        # A stream that never ends by itself (or a hung player) is cut at its duration plus a margin.
        self._watchdog = asyncio.get_running_loop().call_later(limit_s + 5.0, self._kill)

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        self._stderr.append(await proc.stderr.read(64 * 1024))

    def done(self) -> bool:
        return all(p.returncode is not None for p in self._procs)

    def _played(self) -> float:
        return round((self._ended_at or time.time()) - self.started_at, 3)

    def _kill(self) -> None:
        for p in self._procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()

    async def wait(self) -> float:
        codes = [await p.wait() for p in self._procs]
        self._watchdog.cancel()
        if self._ended_at is None:
            self._ended_at = time.time()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if not self._stopped and any(codes):
            err = b"".join(self._stderr).decode(errors="replace").strip().splitlines()
            raise PlaybackError(f"{self._name} exited with code {max(codes, key=abs)}"
                                + (f": {err[-1][:300]}" if err else ""))
        return self._played()

    async def stop(self) -> float:
        self._stopped = True
        self._ended_at = self._ended_at or time.time()
        for p in self._procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self._procs)), 3)
        except TimeoutError:
            self._kill()
            await asyncio.gather(*(p.wait() for p in self._procs))
        self._watchdog.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return self._played()


@dataclass
class ProcessPlayer:
    """Plays through an external program (see :class:`Backend`)."""

    backend: Backend
    started: list[list[str]] = field(default_factory=list)  # argv of each playback, for logs and tests

    @property
    def name(self) -> str:
        return self.backend.name

    async def start(self, source: Source, volume: int) -> ProcessPlayback:
        cmds = self.backend.commands(source, volume)
        self.started.append(cmds[-1] if len(cmds) == 1 else [*cmds[0], "|", *cmds[1]])
        try:
            if len(cmds) == 1:
                procs = [await asyncio.create_subprocess_exec(*cmds[0], stdin=subprocess.DEVNULL,
                                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
            else:
                read, write = os.pipe()
                try:
                    dec = await asyncio.create_subprocess_exec(*cmds[0], stdin=subprocess.DEVNULL, stdout=write,
                                                               stderr=subprocess.PIPE)
                    sink = await asyncio.create_subprocess_exec(*cmds[1], stdin=read, stdout=subprocess.DEVNULL,
                                                                stderr=subprocess.PIPE)
                finally:
                    os.close(read)
                    os.close(write)
                procs = [dec, sink]
        except OSError as exc:
            raise PlaybackError(f"cannot start {self.backend.name}: {exc}") from None
        return ProcessPlayback(procs, self.backend.name, source.duration_s - source.offset_s)


def detect_player(preference: str = "auto", *, speed: float = 1.0) -> tuple[Player, str]:
    """The player to use and a one-line account of the choice (logged by the agent)."""
    if preference == "simulated":
        return SimulatedPlayer(speed), "simulated player (configured)"
    if preference == "null":
        ffmpeg = ffmpeg_exe()
        if ffmpeg:
            return ProcessPlayer(Backend("null", ffmpeg)), f"ffmpeg null output ({ffmpeg}): real timing, no sound"
        return SimulatedPlayer(speed), "simulated player: no ffmpeg for the null output"
    found, refused = candidates()
    if preference != "auto":
        found = [b for b in found if b.name == preference]
        if not found:
            refused = [r for r in refused if r.startswith(preference + ":")] or [f"{preference}: unknown player"]
    for backend in found:
        problem = probe(backend)
        if problem is None:
            return ProcessPlayer(backend), f"{backend.name} ({backend.exe})"
        refused.append(problem)
    reason = "; ".join(refused) or "no candidate"
    return SimulatedPlayer(speed), f"simulated player: no audio output works here ({reason})"
