"""Sound pipeline on real audio: chime, loudness and limiting, MP3 round trip, decoding by content."""

from __future__ import annotations

from pathlib import Path

import pytest

from radio.settings import AUDIO_ASSETS, Settings
from radio.sound.ffmpeg import (
    AudioDecodeError,
    AudioSegment,
    decode_any,
    mp3_duration,
    probe_duration,
    run_ffmpeg,
)
from radio.sound.pipeline import (
    CHIME_GAP_MS,
    encode_mp3,
    finish,
    load_chime,
    make_chime,
    normalize_loudness,
    silence,
)
from radio.speech.engines import EspeakEngine

SENTENCE = "Ủy ban nhân dân phường Thọ Xương thông báo lịch tiêm chủng cho trẻ em vào sáng thứ bảy tuần này."


@pytest.fixture(scope="module")
def speech() -> AudioSegment:
    """Real espeak speech (peaks at 0 dBFS, RMS around -20 dBFS)."""
    return EspeakEngine().synthesize(SENTENCE, voice="vi", rate=150)


def _tone(freq: float, ms: int, dbfs: float, rate: int = 44100, channels: int = 1) -> AudioSegment:
    from pydub.generators import Sine

    seg = Sine(freq, sample_rate=rate).to_audio_segment(ms, volume=dbfs)
    return seg.set_channels(channels)


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_silence_has_exact_length() -> None:
    """silence() is mono 16-bit digital silence of exactly the requested length."""
    seg = silence(400, 22050)
    assert (seg.channels, seg.sample_width, seg.frame_rate) == (1, 2, 22050)
    assert seg.frame_count() == 22050 * 0.4
    assert seg.rms == 0


def test_make_chime_is_short_audible_and_unclipped() -> None:
    """The synthesised chime is ~1.5 s, clearly audible, and peaks below -1 dBFS."""
    chime = make_chime(22050)
    assert (chime.channels, chime.frame_rate, chime.sample_width) == (1, 22050, 2)
    assert 1.2 <= chime.duration_seconds <= 1.8
    assert chime.dBFS > -30
    assert chime.max_dBFS <= -1.0


def test_shipped_chime_file_is_small_mono_22k() -> None:
    """audio/chime.wav is mono 22050 Hz 16-bit, about 1.5 s, and audible."""
    path = AUDIO_ASSETS / "chime.wav"
    seg = decode_any(path)
    assert (seg.channels, seg.frame_rate, seg.sample_width) == (1, 22050, 2)
    assert 1.2 <= seg.duration_seconds <= 1.8
    assert seg.dBFS > -30 and seg.max_dBFS <= -1.0
    assert path.stat().st_size < 100_000


@pytest.mark.parametrize("target", [-16.0, -20.0, -24.0])
def test_finish_hits_loudness_target_without_clipping(
    tmp_path: Path, speech: AudioSegment, target: float,
) -> None:
    """finish() lands within 1 dB of the RMS target and the peak never exceeds -1 dBFS."""
    assert speech.max_dBFS > -0.5  # the premise: espeak output is already at full scale
    out = finish(speech, _settings(tmp_path, loudness_target_dbfs=target), chime=False)
    assert abs(out.dBFS - target) <= 1.0
    assert out.max_dBFS <= -1.0
    assert (out.channels, out.frame_rate, out.sample_width) == (1, 22050, 2)
    assert abs(len(out) - len(speech)) <= 1


def test_finish_raises_quiet_stereo_audio_and_converts_format(tmp_path: Path) -> None:
    """A quiet 44.1 kHz stereo recording comes out mono at the configured rate and at the target level."""
    quiet = _tone(440, 2000, -40.0, rate=44100, channels=2)
    out = finish(quiet, _settings(tmp_path, sample_rate=16000), chime=False)
    assert (out.channels, out.frame_rate) == (1, 16000)
    assert abs(out.dBFS - -16.0) <= 1.0
    assert out.max_dBFS <= -1.0


def test_finish_fades_edges(tmp_path: Path) -> None:
    """The first and last milliseconds are faded so the loudspeaker does not click."""
    out = finish(_tone(440, 1000, -10.0, rate=22050), _settings(tmp_path), chime=False)
    assert out[:2].rms < out[500:502].rms / 4
    assert out[-2:].rms < out[500:502].rms / 4


def test_finish_prepends_chime_and_gap(tmp_path: Path, speech: AudioSegment) -> None:
    """With chime=True the output is chime, then a silent gap, then the speech."""
    settings = _settings(tmp_path)
    chime = load_chime(settings)
    out = finish(speech, settings, chime=True)
    assert abs(len(out) - (len(chime) + CHIME_GAP_MS + len(speech))) <= 2
    assert out[: len(chime)].dBFS > -35
    gap = out[len(chime) + 10: len(chime) + CHIME_GAP_MS - 10]
    assert gap.rms == 0
    assert out.max_dBFS <= -1.0


def test_load_chime_synthesises_when_file_missing(tmp_path: Path) -> None:
    """A missing chime file falls back to the synthesised chime in the speech format."""
    chime = load_chime(_settings(tmp_path, chime_file=tmp_path / "nope.wav", sample_rate=16000))
    assert (chime.channels, chime.frame_rate) == (1, 16000)
    assert chime.duration_seconds > 1.0


def test_normalize_loudness_leaves_silence_alone() -> None:
    """Digital silence is returned as is instead of dividing by zero."""
    seg = silence(500, 22050)
    assert normalize_loudness(seg, -16.0).raw_data == seg.raw_data


def test_mp3_round_trip_keeps_duration(tmp_path: Path, speech: AudioSegment) -> None:
    """An encoded MP3 is mono, decodes back to the same duration, and its header says so too."""
    out = finish(speech, _settings(tmp_path), chime=False)
    mp3 = encode_mp3(out, "64k")
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF
    path = tmp_path / "x.mp3"
    path.write_bytes(mp3)
    decoded = decode_any(path)
    assert decoded.channels == 1
    assert abs(decoded.duration_seconds - out.duration_seconds) < 0.005
    assert abs(probe_duration(path) - out.duration_seconds) < 0.005
    header = mp3_duration(mp3)
    assert header is not None and abs(header - out.duration_seconds) < 0.005
    assert abs(decoded.dBFS - out.dBFS) < 1.0


def test_encode_mp3_rejects_bad_bitrate(speech: AudioSegment) -> None:
    """A malformed bitrate is a ValueError, not an ffmpeg failure."""
    with pytest.raises(ValueError, match="bitrate"):
        encode_mp3(speech, "64kbps; rm -rf /")


@pytest.mark.parametrize("fmt,args", [
    ("wav", ["-c:a", "pcm_s16le", "-f", "wav"]),
    ("ogg", ["-c:a", "libvorbis", "-f", "ogg"]),
    ("m4a", ["-c:a", "aac", "-f", "ipod"]),
    ("mp3", ["-c:a", "libmp3lame", "-f", "mp3"]),
    ("flac", ["-c:a", "flac", "-f", "flac"]),
])
def test_decode_any_sniffs_content_not_extension(tmp_path: Path, fmt: str, args: list[str]) -> None:
    """Each supported container decodes by content, even saved under a misleading extension."""
    tone = _tone(440, 1500, -12.0, rate=44100, channels=2)
    src = tmp_path / "src.raw"
    src.write_bytes(tone.raw_data)
    encoded = tmp_path / f"encoded.{fmt}"
    run_ffmpeg(["-f", "s16le", "-ar", "44100", "-ac", "2", "-i", str(src), *args, str(encoded)])
    disguised = tmp_path / "upload.txt"
    disguised.write_bytes(encoded.read_bytes())
    for source in (disguised, encoded.read_bytes()):
        seg = decode_any(source)
        assert seg.channels == 2 and seg.frame_rate == 44100
        assert abs(seg.duration_seconds - 1.5) < 0.1
        assert abs(seg.dBFS - tone.dBFS) < 1.5


@pytest.mark.parametrize("junk", [
    b"",
    b"Xin chao, day la van ban chu khong phai am thanh.\n" * 20,
    b"\x89PNG\r\n\x1a\n" + bytes(200),
    b"%PDF-1.7\n" + bytes(200),
    b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(range(256)) * 4,
])
def test_decode_any_rejects_non_audio(junk: bytes) -> None:
    """Text, images, documents and a fake MP3 header raise AudioDecodeError, a ValueError."""
    with pytest.raises(AudioDecodeError) as info:
        decode_any(junk)
    assert isinstance(info.value, ValueError)


def test_decode_any_reports_missing_file(tmp_path: Path) -> None:
    """A path that cannot be read is reported as a decode error naming the file."""
    with pytest.raises(AudioDecodeError, match="nope.mp3"):
        decode_any(tmp_path / "nope.mp3")


def test_mp3_duration_without_header_is_none() -> None:
    """mp3_duration returns None rather than guessing when there is no Xing/Info header."""
    assert mp3_duration(b"not an mp3") is None
    assert mp3_duration(b"\xff\xfb\x90\x00" + bytes(400)) is None
