"""prepare_speech / prepare_uploaded end to end: real synthesis, real MP3s, a real store on disk.

Only gTTS's network endpoint is replaced (a local silent socket or a local fake Google); engine
calls are counted by a wrapper registered through the public engine registry.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gtts.tts
import pytest

import radio.speech.prepare as prepare_mod
from radio.settings import Settings
from radio.sound.ffmpeg import AudioDecodeError, AudioSegment, decode_any, probe_duration, run_ffmpeg
from radio.sound.pipeline import encode_mp3
from radio.sound.store import AudioStore
from radio.speech.engines import (
    EngineUnavailableError,
    EspeakEngine,
    UnknownEngineError,
    register_engine,
    unregister_engine,
)
from radio.speech.prepare import (
    BulletinTextError,
    PreparedAudio,
    SpeechPart,
    prepare_playlist,
    prepare_speech,
    prepare_uploaded,
)
from tests.speech.test_engines import SilentServer  # one never-answering peer for every gTTS test

BULLETIN = (
    "Ủy ban nhân dân phường Thọ Xương thông báo. Sáng thứ bảy tuần này có tiêm chủng cho trẻ em.\n\n"
    "Đề nghị phụ huynh mang theo sổ tiêm chủng. Xin cảm ơn bà con."
)


class CountingEngine:
    """espeak, counting calls: proves whether synthesis happened."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = EspeakEngine()
        self.calls: list[str] = []

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        self.calls.append(text)
        return self.inner.synthesize(text, voice=voice, rate=rate)


@pytest.fixture
def counting() -> Iterator[CountingEngine]:
    engine = CountingEngine()
    register_engine("counting", lambda settings: engine)
    yield engine
    unregister_engine("counting")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, gtts_timeout_s=0.5)


@pytest.fixture
def store(tmp_path: Path) -> AudioStore:
    return AudioStore(tmp_path / "audio")


# --- gTTS endpoint stand-ins (only where gTTS connects) -------------------------------------------

class FakeGoogle(ThreadingHTTPServer):
    """Answers every gTTS request with one MP3 clip in Google's batchexecute framing."""

    daemon_threads = True

    def __init__(self, mp3: bytes) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                line = '[["wrb.fr","jQ1olc","[\\"' + base64.b64encode(mp3).decode() + '\\"]",null]]'
                body = (")]}'\n\n" + line + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def point_gtts_at(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(gtts.tts, "_translate_url",
                        lambda tld="com", path="": f"http://127.0.0.1:{port}/{path}")


# --- speech ---------------------------------------------------------------------------------------

def test_prepare_speech_stores_a_measured_normalised_mp3(settings: Settings, store: AudioStore) -> None:
    """The result is an MP3 in the store, named by its sha256, at the target level, duration measured."""
    result = prepare_speech([BULLETIN], settings, engine="espeak", chime=False, store=store)
    assert isinstance(result, PreparedAudio)
    assert (result.engine, result.fallback_reason, result.cached) == ("espeak", None, False)
    data = result.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == result.sha256
    assert result.path == store.path_for(result.sha256)
    assert abs(probe_duration(result.path) - result.duration_s) < 0.01
    audio = decode_any(result.path)
    assert (audio.channels, audio.frame_rate) == (1, settings.sample_rate)
    assert 8 < result.duration_s < 30
    assert abs(audio.dBFS - settings.loudness_target_dbfs) <= 1.0
    assert audio.max_dBFS <= -0.5  # MP3 coding may overshoot the -1 dBFS PCM ceiling slightly


def test_chime_and_pauses_add_their_length(settings: Settings, store: AudioStore) -> None:
    """The chime adds its length plus the 300 ms gap; a second bulletin adds a paragraph pause."""
    plain = prepare_speech([BULLETIN], settings, chime=False, store=store)
    chimed = prepare_speech([BULLETIN], settings, chime=True, store=store)
    assert chimed.sha256 != plain.sha256
    assert chimed.duration_s - plain.duration_s == pytest.approx(1.5 + 0.3, abs=0.1)
    one = prepare_speech(["Xin chào."], settings, chime=False, store=store)
    two = prepare_speech(["Xin chào.", "Xin chào."], settings, chime=False, store=store)
    gap = settings.paragraph_pause_ms / 1000
    assert two.duration_s == pytest.approx(2 * one.duration_s + gap, abs=0.15)


def test_progress_is_reported_per_sentence(settings: Settings, store: AudioStore) -> None:
    """progress(done, total) is called once per sentence, ending at (total, total)."""
    calls: list[tuple[int, int]] = []
    prepare_speech([BULLETIN], settings, chime=False, store=store, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cache_hit_skips_synthesis_and_rewrites_nothing(
    settings: Settings, store: AudioStore, counting: CountingEngine,
) -> None:
    """A repeat with equal inputs returns the stored audio, calls no engine and leaves the file untouched."""
    first = prepare_speech([BULLETIN], settings, engine="counting", store=store)
    assert len(counting.calls) == 4
    mtime = first.path.stat().st_mtime_ns
    again = prepare_speech([BULLETIN], settings, engine="counting", store=store)  # bench/tts.py times it
    assert again.cached and again.sha256 == first.sha256 and again.duration_s == first.duration_s
    assert len(counting.calls) == 4
    assert first.path.stat().st_mtime_ns == mtime


def test_cache_key_follows_every_audible_input(
    settings: Settings, store: AudioStore, counting: CountingEngine, tmp_path: Path,
) -> None:
    """Changing text, voice, rate, chime or loudness makes new audio; whitespace-only changes do not."""
    base = prepare_speech(["Xin chào bà con."], settings, engine="counting", store=store)
    assert prepare_speech(["Xin  chào   bà con. "], settings, engine="counting", store=store).cached
    variants = [
        prepare_speech(["Xin chào cả nhà."], settings, engine="counting", store=store),
        prepare_speech(["Xin chào bà con."], settings, engine="counting", voice="vi-vn-x-south", store=store),
        prepare_speech(["Xin chào bà con."], settings, engine="counting", rate=200, store=store),
        prepare_speech(["Xin chào bà con."], settings, engine="counting", chime=False, store=store),
        prepare_speech(["Xin chào bà con."], Settings(data_dir=tmp_path, loudness_target_dbfs=-20),
                       engine="counting", store=store),
    ]
    assert not any(v.cached for v in variants)
    assert len({base.sha256, *(v.sha256 for v in variants)}) == 6


def test_the_same_content_asked_for_at_once_is_spoken_once(
    settings: Settings, store: AudioStore, counting: CountingEngine,
) -> None:
    """Eight fires of the same bulletin at the same instant (every zone at 06:00): one synthesis, eight answers."""
    results: list[PreparedAudio] = []
    barrier = threading.Barrier(8)

    def fire() -> None:
        barrier.wait()
        results.append(prepare_speech([BULLETIN], settings, engine="counting", store=store))

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8 and len({r.sha256 for r in results}) == 1
    assert len(counting.calls) == 4  # four sentences, spoken once
    assert sum(not r.cached for r in results) == 1


def test_deleted_audio_is_made_again(settings: Settings, store: AudioStore) -> None:
    """If the stored file disappears, the key is a miss and the audio is rebuilt."""
    first = prepare_speech(["Xin chào."], settings, store=store)
    first.path.unlink()
    again = prepare_speech(["Xin chào."], settings, store=store)
    assert not again.cached and again.path.exists()


@pytest.mark.parametrize("texts,message", [
    ([""], "không có nội dung"),
    (["   \n\t "], "không có nội dung"),
    (["Xin chào.", " "], "bản tin 2 không có nội dung"),
    ([], "chưa có nội dung bản tin"),
    (["a" * 101], "dài 101 ký tự"),
    (["!!! ...\n\n***"], "không có gì để đọc"),
])
def test_prepare_rejects_bad_text(tmp_path: Path, texts: list[str], message: str) -> None:
    """Empty, whitespace-only, missing and over-long bulletins are ValueErrors naming the problem."""
    settings = Settings(data_dir=tmp_path, max_bulletin_chars=100)
    with pytest.raises(BulletinTextError, match=message) as info:
        prepare_speech(texts, settings, store=AudioStore(tmp_path))
    assert isinstance(info.value, ValueError)


def test_prepare_rejects_unknown_engine(settings: Settings, store: AudioStore) -> None:
    """An unknown engine name is refused before anything is synthesised."""
    with pytest.raises(UnknownEngineError):
        prepare_speech(["Xin chào."], settings, engine="festival", store=store)


def test_a_bare_string_is_one_bulletin(settings: Settings, store: AudioStore) -> None:
    """Passing a str instead of a list speaks it as one bulletin, not character by character."""
    as_str = prepare_speech("Xin chào.", settings, store=store)
    as_list = prepare_speech(["Xin chào."], settings, store=store)
    assert as_list.cached and as_list.sha256 == as_str.sha256


def test_default_store_is_settings_audio_dir(settings: Settings) -> None:
    """Without an explicit store the audio lands under settings.audio_dir."""
    result = prepare_speech(["Xin chào."], settings)
    assert result.path.is_relative_to(settings.audio_dir)


# --- fallback and its caching ----------------------------------------------------------------------

def test_gtts_outage_falls_back_and_is_retried_later(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, store: AudioStore,
) -> None:
    """During an outage espeak stands in (with a reason) and is reused briefly; later gTTS is retried."""
    silent = SilentServer()
    try:
        point_gtts_at(monkeypatch, silent.port)
        first = prepare_speech([BULLETIN], settings, engine="gtts", store=store)
        assert first.engine == "espeak" and not first.cached
        assert first.fallback_reason is not None and "gtts" in first.fallback_reason
        attempts = len(silent.connections)
        assert attempts >= 1

        # Within the retry window the stand-in is served without touching the network.
        again = prepare_speech([BULLETIN], settings, engine="gtts", store=store)
        assert again.cached and again.sha256 == first.sha256
        assert again.fallback_reason == first.fallback_reason
        assert len(silent.connections) == attempts

        # The stand-in is also a genuine espeak rendition, so plain espeak requests reuse it.
        assert prepare_speech([BULLETIN], settings, engine="espeak", store=store).sha256 == first.sha256

        # Once the window has passed, Google is asked again.
        monkeypatch.setattr(prepare_mod, "FALLBACK_RETRY_S", 0.0)
        retried = prepare_speech([BULLETIN], settings, engine="gtts", store=store)
        assert not retried.cached and retried.engine == "espeak"
        assert len(silent.connections) > attempts
    finally:
        silent.close()


def test_gtts_success_replaces_the_fallback_entry(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, store: AudioStore,
) -> None:
    """After the outage, a successful gTTS rendition replaces the stand-in and is then cached as gTTS."""
    silent = SilentServer()
    try:
        point_gtts_at(monkeypatch, silent.port)
        stand_in = prepare_speech(["Xin chào bà con."], settings, engine="gtts", store=store)
    finally:
        silent.close()
    assert stand_in.engine == "espeak"

    clip = EspeakEngine().synthesize("Xin chào.", voice="vi-vn-x-south", rate=150).set_frame_rate(24000)
    google = FakeGoogle(encode_mp3(clip, "64k"))
    try:
        point_gtts_at(monkeypatch, google.port)
        monkeypatch.setattr(prepare_mod, "FALLBACK_RETRY_S", 0.0)
        fresh = prepare_speech(["Xin chào bà con."], settings, engine="gtts", store=store)
        assert (fresh.engine, fresh.fallback_reason, fresh.cached) == ("gtts", None, False)
        assert fresh.sha256 != stand_in.sha256
        requests = google.requests
        hit = prepare_speech(["Xin chào bà con."], settings, engine="gtts", store=store)
        assert hit.cached and hit.engine == "gtts" and hit.sha256 == fresh.sha256
        assert google.requests == requests
    finally:
        google.close()


# --- uploads ---------------------------------------------------------------------------------------

def _tone_file(tmp_path: Path, fmt: str, args: list[str]) -> bytes:
    from pydub.generators import Sine

    tone = Sine(330, sample_rate=44100).to_audio_segment(3000, volume=-35.0).set_channels(2)
    raw = tmp_path / "tone.raw"
    raw.write_bytes(tone.raw_data)
    out = tmp_path / f"tone.{fmt}"
    run_ffmpeg(["-f", "s16le", "-ar", "44100", "-ac", "2", "-i", str(raw), *args, str(out)])
    return out.read_bytes()


@pytest.mark.parametrize("fmt,args", [
    ("wav", ["-c:a", "pcm_s16le", "-f", "wav"]),
    ("m4a", ["-c:a", "aac", "-f", "ipod"]),
])
def test_prepare_uploaded_normalises_and_stores(
    tmp_path: Path, settings: Settings, store: AudioStore, fmt: str, args: list[str],
) -> None:
    """An uploaded quiet stereo recording becomes a mono MP3 at the target level with its duration."""
    result = prepare_uploaded(_tone_file(tmp_path, fmt, args), settings, store)
    assert (result.engine, result.cached, result.fallback_reason) == ("upload", False, None)
    audio = decode_any(result.path)
    assert (audio.channels, audio.frame_rate) == (1, settings.sample_rate)
    assert abs(audio.dBFS - settings.loudness_target_dbfs) <= 1.0
    assert result.duration_s == pytest.approx(3.0, abs=0.1)
    again = prepare_uploaded(_tone_file(tmp_path, fmt, args), settings, store)
    assert again.cached and again.sha256 == result.sha256


@pytest.mark.parametrize("junk", [b"", b"<html><body>not audio</body></html>", b"%PDF-1.4 " + bytes(100)])
def test_prepare_uploaded_rejects_non_audio(settings: Settings, store: AudioStore, junk: bytes) -> None:
    """Empty or non-audio uploads are ValueErrors with a clear message, and nothing is stored."""
    with pytest.raises(ValueError, match="trống|âm thanh") as info:
        prepare_uploaded(junk, settings, store)
    assert junk == b"" or isinstance(info.value, AudioDecodeError)
    assert not store.root.exists() or not any(store.root.rglob("*.mp3"))


# --- playlists: a different engine, voice and rate per bulletin ---------------------------------------

class RecordingEngine:
    """espeak under another name, recording (text, voice, rate) for each call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inner = EspeakEngine()
        self.calls: list[tuple[str, str, int]] = []

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        self.calls.append((text, voice, rate))
        return self.inner.synthesize(text, voice=voice, rate=rate)


class BrokenEngine:
    """An engine that is never available, counting how often it was asked."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        self.calls += 1
        raise EngineUnavailableError("service down")


@pytest.fixture
def engines() -> Iterator[dict[str, RecordingEngine | BrokenEngine]]:
    made: dict[str, RecordingEngine | BrokenEngine] = {
        "alpha": RecordingEngine("alpha"), "beta": RecordingEngine("beta"), "broken": BrokenEngine(),
    }
    for name, engine in made.items():
        register_engine(name, lambda settings, engine=engine: engine)  # type: ignore[misc]
    yield made
    for name in made:
        unregister_engine(name)


def test_playlist_speaks_each_part_with_its_own_engine_voice_and_rate(
    settings: Settings, store: AudioStore, engines: dict[str, Any],
) -> None:
    """Each part goes to its own engine with its own voice and rate; unset fields take the site defaults."""
    parts = [
        SpeechPart("Xin chào bà con. Hôm nay trời đẹp.", engine="alpha", voice="vi-vn-x-south", rate=200),
        SpeechPart("Thông báo của UBND phường.", engine="beta"),
        SpeechPart("Xin cảm ơn.", engine="alpha", voice="vi-vn-x-central", rate=120),
    ]
    result = prepare_playlist(parts, settings, store=store)
    assert engines["alpha"].calls == [
        ("xin chào bà con.", "vi-vn-x-south", 200), ("hôm nay trời đẹp.", "vi-vn-x-south", 200),
        ("xin cảm ơn.", "vi-vn-x-central", 120),
    ]
    assert engines["beta"].calls == [("thông báo của ủy ban nhân dân phường.", settings.tts_voice,
                                      settings.tts_rate)]
    assert (result.engine, result.fallback_reason, result.cached) == ("alpha+beta", None, False)


def test_playlist_has_one_chime_and_paragraph_pauses_between_parts(
    settings: Settings, store: AudioStore,
) -> None:
    """Parts are joined by the paragraph pause and the chime is played once, at the start."""
    one = prepare_playlist([SpeechPart("Xin chào.")], settings, chime=False, store=store)
    slow = prepare_playlist([SpeechPart("Xin chào.", rate=100)], settings, chime=False, store=store)
    both = prepare_playlist([SpeechPart("Xin chào."), SpeechPart("Xin chào.", rate=100)], settings,
                            chime=False, store=store)
    chimed = prepare_playlist([SpeechPart("Xin chào."), SpeechPart("Xin chào.", rate=100)], settings,
                              store=store)
    gap = settings.paragraph_pause_ms / 1000
    assert both.duration_s == pytest.approx(one.duration_s + slow.duration_s + gap, abs=0.15)
    assert chimed.duration_s - both.duration_s == pytest.approx(1.5 + 0.3, abs=0.1)


def test_playlist_cache_key_covers_every_part(
    settings: Settings, store: AudioStore, engines: dict[str, Any],
) -> None:
    """The same playlist is a cache hit; changing any one part's text, engine, voice or rate is a miss."""
    base = [SpeechPart("Xin chào.", engine="alpha"), SpeechPart("Tạm biệt.", engine="beta", rate=160)]
    first = prepare_playlist(base, settings, store=store)
    assert prepare_playlist(list(base), settings, store=store).cached
    variants = [
        [base[0], SpeechPart("Tạm biệt bà con.", engine="beta", rate=160)],
        [base[0], SpeechPart("Tạm biệt.", engine="alpha", rate=160)],
        [base[0], SpeechPart("Tạm biệt.", engine="beta", voice="vi-vn-x-south", rate=160)],
        [base[0], SpeechPart("Tạm biệt.", engine="beta", rate=170)],
        [base[1], base[0]],
    ]
    results = [prepare_playlist(v, settings, store=store) for v in variants]
    assert not any(r.cached for r in results)
    assert len({first.sha256, *(r.sha256 for r in results)}) == len(variants) + 1


def test_prepare_speech_is_a_one_engine_playlist(settings: Settings, store: AudioStore) -> None:
    """prepare_speech(texts, engine, voice, rate) gives exactly the playlist of those texts with that choice."""
    spoken = prepare_speech(["Xin chào.", "Tạm biệt."], settings, voice="vi-vn-x-south", rate=180, store=store)
    listed = prepare_playlist([SpeechPart("Xin chào.", None, "vi-vn-x-south", 180),
                               SpeechPart("Tạm biệt.", None, "vi-vn-x-south", 180)], settings, store=store)
    assert listed.cached and listed.sha256 == spoken.sha256


def test_playlist_falls_back_per_part_and_asks_a_failed_engine_once(
    settings: Settings, store: AudioStore, engines: dict[str, Any],
) -> None:
    """Parts whose engine fails are spoken by espeak; the engine is asked once; reasons name the parts."""
    parts = [SpeechPart("Một. Hai.", engine="broken", voice="vi-vn-x-south"), SpeechPart("Ba.", engine="alpha"),
             SpeechPart("Bốn.", engine="broken")]
    calls: list[tuple[int, int]] = []
    result = prepare_playlist(parts, settings, store=store, progress=lambda d, t: calls.append((d, t)))
    assert engines["broken"].calls == 1
    assert result.engine == "espeak+alpha"
    assert result.fallback_reason == "broken: service down (bản tin 1, 3)"
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # The stand-in is also cached as what it really is: espeak (south voice) for parts 1 and 3.
    real = [SpeechPart("Một. Hai.", engine="espeak", voice="vi-vn-x-south"), SpeechPart("Ba.", engine="alpha"),
            SpeechPart("Bốn.", engine="espeak")]
    again = prepare_playlist(real, settings, store=store)
    assert again.cached and again.sha256 == result.sha256 and again.fallback_reason is None


def test_single_bulletin_fallback_reason_has_no_part_numbers(
    settings: Settings, store: AudioStore, engines: dict[str, Any],
) -> None:
    """With one bulletin the reason is just 'engine: message', as prepare_speech always reported it."""
    result = prepare_speech(["Xin chào."], settings, engine="broken", store=store)
    assert (result.engine, result.fallback_reason) == ("espeak", "broken: service down")


def test_progress_restarts_at_the_failed_part(settings: Settings, store: AudioStore) -> None:
    """When an engine fails mid-part, progress goes back to the part's start and counts the espeak pass."""

    class FailsOnSecond(RecordingEngine):
        def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
            if len(self.calls) == 1:
                raise EngineUnavailableError("lost connection")
            return super().synthesize(text, voice=voice, rate=rate)

    flaky = FailsOnSecond("flaky")
    register_engine("flaky", lambda settings: flaky)
    try:
        calls: list[tuple[int, int]] = []
        result = prepare_playlist([SpeechPart("Một."), SpeechPart("Hai. Ba.", engine="flaky")], settings,
                                  store=store, progress=lambda d, t: calls.append((d, t)))
    finally:
        unregister_engine("flaky")
    assert calls == [(1, 3), (2, 3), (2, 3), (3, 3)]
    assert result.engine == "espeak" and result.fallback_reason == "flaky: lost connection (bản tin 2)"


def test_playlist_rejects_bad_parts_before_speaking(
    settings: Settings, store: AudioStore, engines: dict[str, Any],
) -> None:
    """An empty part or an unknown engine anywhere in the playlist fails before any synthesis."""
    with pytest.raises(BulletinTextError, match="bản tin 2 không có nội dung"):
        prepare_playlist([SpeechPart("Xin chào.", engine="alpha"), SpeechPart("  ")], settings, store=store)
    with pytest.raises(UnknownEngineError):
        prepare_playlist([SpeechPart("Xin chào.", engine="alpha"), SpeechPart("Hi.", engine="nope")], settings,
                         store=store)
    with pytest.raises(BulletinTextError, match="chưa có nội dung bản tin"):
        prepare_playlist([], settings, store=store)
    assert engines["alpha"].calls == []


def test_piper_without_a_model_falls_back_and_records_why(settings: Settings, store: AudioStore) -> None:
    """A bulletin asking for Piper with a model path that does not exist airs with espeak, reason kept."""
    site = settings.model_copy(update={"piper_model": settings.data_dir / "voices" / "vi_VN-missing.onnx"})
    result = prepare_speech(["Xin chào bà con."], site, engine="piper", store=store)
    assert result.engine == "espeak"
    assert result.fallback_reason is not None
    assert result.fallback_reason.startswith("piper: ") and "không tồn tại" in result.fallback_reason
    assert prepare_speech(["Xin chào bà con."], site, engine="piper", store=store).cached
