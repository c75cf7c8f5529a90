"""Players: the simulated one keeps time; the process player really decodes through ffmpeg, aplay-style pipes too."""

from __future__ import annotations

import asyncio
import functools
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radio.node.players import (
    Backend,
    PlaybackError,
    ProcessPlayer,
    SimulatedPlayer,
    Source,
    detect_player,
    ffmpeg_exe,
)

FFMPEG = ffmpeg_exe()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg")


@pytest.fixture
def tone(tmp_path: Path) -> Path:
    """A real 1.0 s MP3."""
    assert FFMPEG is not None
    path = tmp_path / "tone.mp3"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-ac", "1", "-ar", "22050", "-b:a", "32k", "-y", str(path)], check=True)
    return path


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[str]:
    """Serve tmp_path over HTTP, as a stand-in for a live stream."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class names it so
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_simulated_player_keeps_time_and_stops() -> None:
    """It waits the duration (divided by speed) and reports seconds of audio played; stop cuts it short."""
    async def scenario() -> tuple[float, float]:
        player = SimulatedPlayer(speed=2.0)
        done = await (await player.start(Source(duration_s=0.4, path=Path("a.mp3")), 80)).wait()
        cut = await player.start(Source(duration_s=10, path=Path("b.mp3")), 80)
        await asyncio.sleep(0.1)
        return done, await cut.stop()

    done, cut = asyncio.run(scenario())
    assert done == pytest.approx(0.4, abs=0.05) and cut == pytest.approx(0.2, abs=0.06)


@needs_ffmpeg
def test_process_player_decodes_in_real_time_with_volume(tone: Path) -> None:
    """The null output decodes the real file in real time: about its duration, with the volume filter applied."""
    assert FFMPEG is not None
    player = ProcessPlayer(Backend("null", FFMPEG))

    async def scenario() -> float:
        return await (await player.start(Source(duration_s=1.0, path=tone), 35)).wait()

    began = time.monotonic()
    played = asyncio.run(scenario())
    assert 0.8 <= time.monotonic() - began <= 2.0 and played == pytest.approx(1.0, abs=0.4)
    assert "volume=0.35,arealtime" in player.started[0]


@needs_ffmpeg
def test_process_player_stop_kills_it_and_failures_have_reasons(tone: Path, tmp_path: Path) -> None:
    """Stop ends the process at once; an undecodable file is a PlaybackError naming the player."""
    assert FFMPEG is not None
    player = ProcessPlayer(Backend("null", FFMPEG))
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all")

    async def scenario() -> float:
        playback = await player.start(Source(duration_s=1.0, path=tone), 80)
        await asyncio.sleep(0.2)
        played = await playback.stop()
        with pytest.raises(PlaybackError, match="null exited"):
            await (await player.start(Source(duration_s=1.0, path=bad), 80)).wait()
        return played

    assert asyncio.run(scenario()) < 0.6


@needs_ffmpeg
def test_relay_plays_a_stream_for_its_duration(tone: Path, http_dir: str) -> None:
    """A relay reads an HTTP stream and stops after the duration it was given."""
    assert FFMPEG is not None
    player = ProcessPlayer(Backend("null", FFMPEG))

    async def scenario() -> float:
        return await (await player.start(Source(duration_s=0.5, url=f"{http_dir}/{tone.name}"), 80)).wait()

    began = time.monotonic()
    asyncio.run(scenario())
    assert 0.3 <= time.monotonic() - began <= 1.8


@needs_ffmpeg
def test_aplay_style_pipe_and_detection(tone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an `aplay` on PATH that accepts PCM, detection picks it and ffmpeg feeds it the decoded file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aplay"
    fake.write_text(f"#!/bin/sh\ncat > {tmp_path / 'pcm.raw'}\n")
    fake.chmod(0o755)
    broken = bin_dir / "mpv"
    broken.write_text("#!/bin/sh\necho 'no audio device' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    player, note = detect_player("aplay")
    assert isinstance(player, ProcessPlayer) and player.name == "aplay", note

    async def scenario() -> None:
        await (await player.start(Source(duration_s=1.0, path=tone), 100)).wait()

    asyncio.run(scenario())
    assert (tmp_path / "pcm.raw").stat().st_size > 150_000  # ~1 s of 48 kHz stereo s16
    auto, note = detect_player("auto")
    if isinstance(auto, SimulatedPlayer):
        assert "mpv: no audio device" in note
    else:
        assert auto.name != "mpv"  # mpv fails its probe, so something after it was chosen


def test_simulated_is_chosen_on_request_and_unknown_players_fall_back_with_a_reason() -> None:
    """`simulated` is honoured; an unknown or absent player falls back to the simulated one, saying why."""
    player, note = detect_player("simulated")
    assert isinstance(player, SimulatedPlayer) and "configured" in note
    player, note = detect_player("gramophone")
    assert isinstance(player, SimulatedPlayer) and "gramophone" in note
