"""ffmpeg access for the whole project: locate the binary, decode anything, measure durations.

Only ``ffmpeg`` is used: ``imageio-ffmpeg`` ships no ``ffprobe``, so nothing here (or in pydub calls
made through this module) may rely on it. Import ``AudioSegment`` and ``audioop`` from here: pydub
imports the deprecated ``audioop`` and warns at import that it found no ffmpeg on PATH; both warnings
are expected and silenced once, deliberately, in this one place.
"""

from __future__ import annotations

import functools
import logging
import shutil
import struct
import subprocess
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Couldn't find ff", category=RuntimeWarning)
    import audioop  # re-exported for the pipeline; gone in 3.13 -> audioop-lts

    from pydub import AudioSegment

__all__ = [
    "AudioDecodeError",
    "AudioSegment",
    "FfmpegNotFoundError",
    "audioop",
    "decode_any",
    "ffmpeg_exe",
    "mp3_duration",
    "probe_duration",
    "run_ffmpeg",
    "sniff_audio_format",
]

log = logging.getLogger(__name__)

# Generous: decoding an hour of MP3 takes a few seconds; a hang must not block a broadcast forever.
_FFMPEG_TIMEOUT_S = 300.0


class AudioDecodeError(ValueError):
    """The input is not audio ffmpeg can decode (a user mistake, e.g. a PDF uploaded as a bulletin)."""


class FfmpegNotFoundError(RuntimeError):
    """Neither a system ffmpeg nor imageio-ffmpeg's bundled binary is available."""


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (system one first); also points pydub at it, once."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        try:
            import imageio_ffmpeg

            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as exc:
            raise FfmpegNotFoundError(
                "ffmpeg not found: install ffmpeg or the imageio-ffmpeg package"
            ) from exc
    AudioSegment.converter = exe
    log.debug("using ffmpeg at %s", exe)
    return exe


def run_ffmpeg(args: list[str], *, stdin: bytes | None = None) -> bytes:
    """Run ffmpeg quietly with ``args`` and return its stdout; raise ``AudioDecodeError`` on failure."""
    quiet = ["-hide_banner", "-loglevel", "error", *([] if stdin is not None else ["-nostdin"])]
    cmd = [ffmpeg_exe(), *quiet, *args]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AudioDecodeError(f"ffmpeg xử lý quá lâu (hơn {_FFMPEG_TIMEOUT_S:.0f} giây)") from exc
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = detail[-1] if detail else "unknown error"
        raise AudioDecodeError(f"ffmpeg không xử lý được tệp âm thanh: {last}")
    return proc.stdout


# Magic numbers of the containers we accept; checked before ffmpeg so that text, HTML or images
# are refused with a clear message instead of being "decoded" by one of ffmpeg's lenient demuxers.
def sniff_audio_format(head: bytes) -> str | None:
    """Name the audio container from the first bytes of a file, or None if it is not one we accept."""
    if head.startswith(b"ID3"):
        return "mp3"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"  # what browsers record (MediaRecorder)
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b"#!AMR"):
        return "amr"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync: MP3 without ID3, or ADTS AAC (layer bits 00).
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


def _parse_wav(data: bytes) -> AudioSegment:
    """Build a segment from ffmpeg's streamed WAV (its size fields are bogus on a pipe, so ignore them)."""
    if not (data.startswith(b"RIFF") and data[8:12] == b"WAVE"):
        raise AudioDecodeError("ffmpeg không tạo ra được âm thanh (không có dữ liệu WAV)")
    pos = 12
    fmt: tuple[int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            _tag, channels, rate, _brate, _align, bits = struct.unpack("<HHIIHH", data[body:body + 16])
            fmt = (channels, rate, bits // 8)
        elif chunk_id == b"data":
            if fmt is None:
                break
            channels, rate, width = fmt
            pcm = data[body:]
            pcm = pcm[: len(pcm) - len(pcm) % (channels * width)]
            return AudioSegment(data=pcm, sample_width=width, frame_rate=rate, channels=channels)
        pos = body + size + (size & 1)
    raise AudioDecodeError("ffmpeg không tạo ra được âm thanh (WAV rỗng)")


def decode_any(data_or_path: bytes | str | Path) -> AudioSegment:
    """Decode MP3/WAV/OGG/M4A/FLAC/WebM bytes or a file, by content, to 16-bit PCM at its own rate."""
    if isinstance(data_or_path, bytes | bytearray | memoryview):
        data = bytes(data_or_path)
        _check_sniff(data[:16])
        # Through a file, not a pipe: MP4/M4A from phones keep their index at the end, which
        # ffmpeg can only reach by seeking.
        with tempfile.TemporaryDirectory(prefix="radio-decode-") as tmp:
            path = Path(tmp) / "input"
            path.write_bytes(data)
            return _decode_file(path)
    path = Path(data_or_path)
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise AudioDecodeError(f"không đọc được {path}: {exc.strerror}") from exc
    _check_sniff(head)
    return _decode_file(path)


def _check_sniff(head: bytes) -> str:
    kind = sniff_audio_format(head)
    if kind is None:
        raise AudioDecodeError("không nhận ra định dạng âm thanh (cần MP3, WAV, OGG, M4A/AAC, FLAC hoặc WebM)")
    return kind


def _decode_file(path: Path) -> AudioSegment:
    # -map 0:a:0: refuse containers with no audio stream (e.g. a silent video) instead of producing nothing.
    wav = run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-vn", "-c:a", "pcm_s16le", "-f", "wav", "pipe:1"])
    segment = _parse_wav(wav)
    if len(segment.raw_data) == 0:
        raise AudioDecodeError("tệp không có dữ liệu âm thanh")
    return segment


def probe_duration(path: str | Path) -> float:
    """Duration in seconds of an audio file, measured by decoding it fully with ffmpeg."""
    segment = decode_any(path)
    return float(len(segment.raw_data) / (segment.frame_width * segment.frame_rate))


_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_duration(data: bytes) -> float | None:
    """Exact duration of an MP3 from its Xing/Info + LAME header (what ffmpeg writes), else None.

    Reads the frame count and the encoder delay/padding from the first frame, so it costs
    microseconds where decoding costs a third of a second for a few minutes of speech; files without
    that header (None) should be measured with :func:`probe_duration`.
    """
    pos = 0
    if data.startswith(b"ID3") and len(data) >= 10:
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        pos = 10 + size + (10 if data[5] & 0x10 else 0)
    head = data[pos:pos + 4]
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0 or (head[1] >> 1) & 3 != 1:
        return None  # not an MPEG layer III frame
    version, rate_idx, mono = (head[1] >> 3) & 3, (head[2] >> 2) & 3, (head[3] >> 6) == 3
    if version == 1 or rate_idx == 3:
        return None
    rate = _MP3_RATES[version][rate_idx]
    spf = 1152 if version == 3 else 576
    side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    tag = pos + 4 + side
    if data[tag:tag + 4] not in (b"Xing", b"Info") or len(data) < tag + 8:
        return None
    flags: int = struct.unpack(">I", data[tag + 4:tag + 8])[0]
    if not flags & 1:
        return None
    frames: int = struct.unpack(">I", data[tag + 8:tag + 12])[0]
    # Optional fields, by flag bit: frame count, byte count, 100-byte seek table, quality.
    lame = tag + 8 + sum(size for bit, size in ((1, 4), (2, 4), (4, 100), (8, 4)) if flags & bit)
    delay = padding = 0
    if data[lame:lame + 4] in (b"LAME", b"Lavc", b"Lavf") and len(data) >= lame + 24:
        b0, b1, b2 = data[lame + 21:lame + 24]
        delay, padding = (b0 << 4) | (b1 >> 4), ((b1 & 0x0F) << 8) | b2
    return max(0, frames * spf - delay - padding) / rate
