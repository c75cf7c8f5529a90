"""Sound steps between a speech engine and the MP3 a loudspeaker plays.

Everything works on 16-bit PCM ``AudioSegment`` objects with C-level ``audioop`` operations; no
numpy. Loudness is RMS dBFS (what pydub calls ``dBFS``), limited so the peak stays at or below
``CEILING_DBFS``: espeak already peaks at 0 dBFS, so plain gain would clip.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
import tempfile
from collections.abc import Sequence
from itertools import accumulate, groupby, repeat
from operator import mul
from pathlib import Path
from typing import TYPE_CHECKING

from radio.sound.ffmpeg import AudioSegment, audioop, decode_any, run_ffmpeg

if TYPE_CHECKING:
    from radio.settings import Settings

log = logging.getLogger(__name__)

CEILING_DBFS = -1.0
FADE_IN_MS = 15
FADE_OUT_MS = 40
CHIME_GAP_MS = 300
# The chime is tonal and carries further than speech at equal RMS; sit it a little below the speech.
CHIME_BELOW_SPEECH_DB = 4.0
MAX_GAIN_DB = 30.0  # beyond this a "quiet" upload is noise, and boosting it only makes louder noise

# Limiter: the gain is constant within a block and moves at most ATTACK_DB / RELEASE_DB per block, so
# the output peak is guaranteed <= ceiling while steps stay small enough not to click on speech.
_BLOCK_MS = 5.0
_ATTACK_DB = 1.5  # per block, applied ahead of the peak (look-ahead)
_RELEASE_DB = 0.5  # per block: 100 dB/s recovery
_BITRATE_RE = re.compile(r"[1-9][0-9]{1,2}k")


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def silence(ms: int, sample_rate: int) -> AudioSegment:
    """``ms`` milliseconds of mono 16-bit digital silence."""
    frames = round(sample_rate * ms / 1000)
    return AudioSegment(data=b"\0\0" * frames, sample_width=2, frame_rate=sample_rate, channels=1)


def to_speech_format(segment: AudioSegment, sample_rate: int) -> AudioSegment:
    """Mono, 16-bit, ``sample_rate`` (each step is a no-op when already so)."""
    return segment.set_channels(1).set_sample_width(2).set_frame_rate(sample_rate)


def concat(segments: Sequence[AudioSegment]) -> AudioSegment:
    """Join segments of one format in O(total) (pydub's ``+`` copies everything at every step)."""
    if not segments:
        raise ValueError("nothing to join")
    first = segments[0]
    for seg in segments[1:]:
        if (seg.frame_rate, seg.channels, seg.sample_width) != (first.frame_rate, first.channels,
                                                                first.sample_width):
            raise ValueError("segments differ in format; convert them with to_speech_format first")
    return first._spawn(b"".join(seg.raw_data for seg in segments))


def rms_dbfs(segment: AudioSegment) -> float:
    """RMS level in dBFS (-inf for digital silence)."""
    return float(segment.dBFS)


def peak_dbfs(segment: AudioSegment) -> float:
    """Peak sample level in dBFS (-inf for digital silence)."""
    return float(segment.max_dBFS)


def _headroom(peaks: Sequence[int], ceiling: float) -> list[float]:
    """Per block, the largest gain the limiter may apply there, with bounded slopes between blocks.

    Start from ``ceiling / peak`` per block and take the min-plus convolution with a kernel that rises
    by ``_ATTACK_DB`` per block towards the past (look-ahead) and ``_RELEASE_DB`` per block towards the
    future (release). For any overall gain G the limited gain of block i is then ``min(G, m[i])``: the
    shape does not depend on G, so it is computed once.
    """
    inf = math.inf
    attack, release = db_to_gain(_ATTACK_DB), db_to_gain(_RELEASE_DB)
    room = [ceiling / p if p else inf for p in peaks]
    back = list(accumulate(reversed(room), lambda nxt, x: min(nxt * attack, x)))
    back.reverse()
    return list(accumulate(back, lambda prev, x: min(prev * release, x)))


def _solve_gain(room: Sequence[float], sq: Sequence[float], wanted: float, max_gain: float) -> float:
    """The overall gain G with ``F(G) = sum(sq[i] * min(G, room[i])**2) == wanted``, capped at ``max_gain``.

    With blocks sorted by room, F on the interval between consecutive rooms is the quadratic
    ``G**2 * (sq of the blocks with more room) + (sq * room**2 of the others)``: find the interval by
    bisection over prefix sums, then solve it exactly. Sums run at C speed through ``map``.
    """
    order = sorted(range(len(room)), key=room.__getitem__)
    rooms = [room[i] for i in order]
    sqs = [sq[i] for i in order]
    # below[k]: sum of sq*room^2 over the k blocks with least room; above[k]: sum of sq over the rest.
    below = [0.0, *accumulate(map(mul, sqs, map(mul, rooms, rooms)))]
    above = [*accumulate(reversed(sqs), initial=0.0)]
    above.reverse()
    n = len(rooms)
    if rooms[-1] * rooms[-1] * above[n - 1] + below[n - 1] < wanted:
        log.warning("loudness target not reachable within the peak ceiling; using the loudest safe gain")
        return min(rooms[-1], max_gain)
    lo, hi = 0, n - 1
    while lo < hi:  # smallest k with F(rooms[k]) >= wanted: the solution lies in [rooms[k-1], rooms[k]]
        k = (lo + hi) // 2
        if rooms[k] * rooms[k] * above[k] + below[k] >= wanted:
            hi = k
        else:
            lo = k + 1
    gain = math.sqrt(max(0.0, wanted - below[lo]) / above[lo]) if above[lo] > 0 else rooms[lo]
    return min(gain, max_gain)


def normalize_loudness(segment: AudioSegment, target_dbfs: float, *,
                       ceiling_dbfs: float = CEILING_DBFS) -> AudioSegment:
    """Bring mono 16-bit audio to ``target_dbfs`` RMS with the peak limited to ``ceiling_dbfs``.

    A look-ahead limiter with a gain that is constant within 5 ms blocks: the output RMS for any
    candidate gain then follows exactly from per-block energies, so the gain that lands on the target
    is found without touching the samples, which are then processed once.
    """
    if segment.sample_width != 2 or segment.channels != 1:
        raise ValueError("normalize_loudness needs mono 16-bit audio")
    pcm = segment.raw_data
    if not pcm or audioop.rms(pcm, 2) == 0:
        log.warning("not normalising digital silence")
        return segment
    block = max(1, round(segment.frame_rate * _BLOCK_MS / 1000)) * 2
    view = memoryview(pcm)
    chunks = [view[off:off + block] for off in range(0, len(pcm), block)]
    peaks = list(map(audioop.max, chunks, repeat(2)))
    rms = list(map(audioop.rms, chunks, repeat(2)))
    sq = list(map(mul, rms, rms))  # mean square per block: blocks are equal but the last, negligible
    # One LSB below the ceiling: audioop.mul rounds negative samples away from zero.
    ceiling = 32768.0 * db_to_gain(ceiling_dbfs) - 1.0
    target = 32768.0 * db_to_gain(target_dbfs)
    room = _headroom(peaks, ceiling)
    gain = _solve_gain(room, sq, target * target * len(sq), db_to_gain(MAX_GAIN_DB))

    out: list[bytes] = []
    pos = 0
    for factor, run in groupby(map(min, repeat(gain), room)):  # one mul per run of equal gain
        end = pos + block * sum(1 for _ in run)
        out.append(audioop.mul(view[pos:end], 2, factor))
        pos = end
    return segment._spawn(b"".join(out))


def make_chime(sample_rate: int) -> AudioSegment:
    """Synthesise a short rising three-note bell chime (C5-E5-G5) from sine partials with decays."""
    from pydub.generators import Sine

    def note(freq: float, ms: int) -> AudioSegment:
        # Fundamental plus two quiet partials gives a soft bell rather than a bare beep.
        tone = Sine(freq, sample_rate=sample_rate).to_audio_segment(ms, volume=-9.0)
        tone = tone.overlay(Sine(2 * freq, sample_rate=sample_rate).to_audio_segment(ms, volume=-21.0))
        tone = tone.overlay(Sine(3 * freq, sample_rate=sample_rate).to_audio_segment(ms, volume=-29.0))
        return to_speech_format(tone, sample_rate).fade_in(8).fade_out(ms - 8)

    step, total = 300, 1500
    chime = silence(total, sample_rate)
    for k, (freq, ms) in enumerate([(523.25, 750), (659.25, 750), (783.99, 900)]):
        chime = chime.overlay(note(freq, ms), position=k * step)
    return chime.apply_gain(-3.0 - chime.max_dBFS)


def write_chime_file(path: Path, sample_rate: int = 22050) -> Path:
    """Write the synthesised chime as mono 16-bit WAV (the shipped ``audio/chime.wav``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    make_chime(sample_rate).export(str(path), format="wav").close()  # export returns the open file
    return path


@functools.lru_cache(maxsize=8)
def _chime_cached(path: str, mtime_ns: int, sample_rate: int, level_dbfs: float) -> AudioSegment:
    seg = to_speech_format(decode_any(path), sample_rate) if mtime_ns >= 0 else make_chime(sample_rate)
    return normalize_loudness(seg, level_dbfs)


def load_chime(settings: Settings) -> AudioSegment:
    """The intro chime in the speech format and level, read once (synthesised if the file is missing)."""
    path = Path(settings.chime_file)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        log.warning("chime file %s missing; synthesising the default chime", path)
        mtime_ns = -1
    level = settings.loudness_target_dbfs - CHIME_BELOW_SPEECH_DB
    return _chime_cached(str(path), mtime_ns, settings.sample_rate, level)


def finish(speech: AudioSegment, settings: Settings, *, chime: bool = True) -> AudioSegment:
    """Broadcast-ready audio: mono at the configured rate, loudness-normalised, faded, chime first."""
    seg = to_speech_format(speech, settings.sample_rate)
    seg = normalize_loudness(seg, settings.loudness_target_dbfs)
    seg = seg.fade_in(min(FADE_IN_MS, len(seg) // 2)).fade_out(min(FADE_OUT_MS, len(seg) // 2))
    if chime:
        seg = concat([load_chime(settings), silence(CHIME_GAP_MS, settings.sample_rate), seg])
    return seg


def encode_mp3(segment: AudioSegment, bitrate: str) -> bytes:
    """Encode to mono CBR MP3 with ffmpeg (via a temp file, so the gapless/duration header is written)."""
    if not _BITRATE_RE.fullmatch(bitrate):
        raise ValueError(f"bad MP3 bitrate {bitrate!r}: expected e.g. '64k'")
    seg = segment.set_sample_width(2)
    with tempfile.TemporaryDirectory(prefix="radio-mp3-") as tmp:
        out = Path(tmp) / "out.mp3"
        run_ffmpeg(
            ["-f", "s16le", "-ar", str(seg.frame_rate), "-ac", str(seg.channels), "-i", "pipe:0",
             "-ac", "1", "-c:a", "libmp3lame", "-b:a", bitrate, "-f", "mp3", str(out)],
            stdin=seg.raw_data,
        )
        return out.read_bytes()


if __name__ == "__main__":  # python -m radio.sound.pipeline [path]: regenerate the shipped chime
    from radio.settings import AUDIO_ASSETS

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else AUDIO_ASSETS / "chime.wav"
    print(write_chime_file(target))
