"""Speech engines on real audio; for gTTS only the network endpoint is replaced by local servers."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gtts.tts
import pytest

from radio.settings import Settings
from radio.sound.ffmpeg import AudioSegment
from radio.sound.pipeline import encode_mp3
from radio.speech.engines import (
    ENGINES,
    ESPEAK_VOICES,
    EngineUnavailableError,
    EspeakEngine,
    GttsEngine,
    UnknownEngineError,
    UnknownVoiceError,
    get_engine,
    synthesize_with_fallback,
)

SENTENCE = "Ủy ban nhân dân phường Thọ Xương thông báo lịch tiêm chủng cho trẻ em vào sáng thứ bảy tuần này."


# --- local stand-ins for translate.google.com ----------------------------------------------------

class SilentServer:
    """Accepts TCP connections and never answers: the peer on which gTTS without a timeout hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
        for conn in self.connections:
            conn.close()


class FakeGoogle(ThreadingHTTPServer):
    """Answers gTTS's batchexecute POST with the same MP3 clip, the way Google frames it."""

    daemon_threads = True

    def __init__(self, mp3: bytes) -> None:
        self.mp3 = mp3
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                b64 = base64.b64encode(outer.mp3).decode()
                line = '[["wrb.fr","jQ1olc","[\\"' + b64 + '\\"]",null,null,null,"generic"]]'
                body = (")]}'\n\n" + line + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
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
    """Replace only where gTTS sends its request: a local port instead of translate.google.com."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(gtts.tts, "_translate_url",
                        lambda tld="com", path="": f"http://127.0.0.1:{port}/{path}")


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def clip() -> AudioSegment:
    """A real speech clip at Google's 24 kHz, served by the fake endpoint."""
    return EspeakEngine().synthesize("Xin chào bà con.", voice="vi", rate=150).set_frame_rate(24000)


@pytest.fixture
def fake_google(clip: AudioSegment) -> Iterator[FakeGoogle]:
    server = FakeGoogle(encode_mp3(clip, "64k"))
    yield server
    server.close()


# --- espeak ---------------------------------------------------------------------------------------

def test_espeak_speaks_vietnamese_with_plausible_duration() -> None:
    """espeak turns a 21-word Vietnamese sentence into 3-12 s of non-silent mono 16-bit speech."""
    audio = EspeakEngine().synthesize(SENTENCE, voice="vi", rate=150)
    assert (audio.channels, audio.sample_width, audio.frame_rate) == (1, 2, 22050)
    assert 3.0 <= audio.duration_seconds <= 12.0
    assert audio.dBFS > -30
    # Speech, not a tone: the level varies a lot between 100 ms windows.
    levels = [audio[i:i + 100].rms for i in range(0, len(audio) - 100, 100)]
    assert min(levels) < max(levels) / 10


@pytest.mark.parametrize("voice", ESPEAK_VOICES)
def test_every_vietnamese_voice_works(voice: str) -> None:
    """Northern, central and southern voices all produce speech."""
    audio = EspeakEngine().synthesize("Xin chào bà con.", voice=voice, rate=150)
    assert audio.duration_seconds > 0.5 and audio.dBFS > -30


def test_regional_voices_differ() -> None:
    """The central and southern voices really are different renditions."""
    engine = EspeakEngine()
    central = engine.synthesize(SENTENCE, voice="vi-vn-x-central", rate=150)
    south = engine.synthesize(SENTENCE, voice="vi-vn-x-south", rate=150)
    assert central.raw_data != south.raw_data


def test_rate_and_pitch_change_the_audio() -> None:
    """A faster rate gives shorter audio and a different pitch gives different samples."""
    slow = EspeakEngine().synthesize(SENTENCE, voice="vi", rate=100)
    fast = EspeakEngine().synthesize(SENTENCE, voice="vi", rate=250)
    assert fast.duration_seconds < slow.duration_seconds * 0.7
    low = EspeakEngine(pitch=20).synthesize(SENTENCE, voice="vi", rate=150)
    high = EspeakEngine(pitch=80).synthesize(SENTENCE, voice="vi", rate=150)
    assert low.raw_data != high.raw_data


def test_espeak_rejects_bad_voice_rate_and_pitch() -> None:
    """Unknown voices and out-of-range rate or pitch are ValueErrors naming the problem."""
    with pytest.raises(UnknownVoiceError, match="vi-vn-x-central"):
        EspeakEngine().synthesize("Xin chào.", voice="en", rate=150)
    with pytest.raises(ValueError, match="rate"):
        EspeakEngine().synthesize("Xin chào.", voice="vi", rate=5)
    with pytest.raises(ValueError, match="pitch"):
        EspeakEngine(pitch=101)


def test_espeak_is_safe_from_many_threads() -> None:
    """Concurrent calls are serialised: each thread gets audio as long as a lone call of its text gives."""
    engine = EspeakEngine()
    # Very different lengths, so audio leaking between calls would show in the durations.
    texts = ["Vâng.", SENTENCE, "Xin chào.", SENTENCE + " " + SENTENCE] * 3
    expected = [engine.synthesize(t, voice="vi", rate=150).duration_seconds for t in texts]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: engine.synthesize(t, voice="vi", rate=150).duration_seconds, texts))
    # espeak varies a few samples between runs (pitch flutter), never by a whole word.
    assert got == pytest.approx(expected, rel=0.05)


# --- registry ---------------------------------------------------------------------------------------

def test_registry_knows_builtin_engines(tmp_path: Path) -> None:
    """get_engine builds espeak and gtts by name and refuses unknown names with the valid list."""
    settings = Settings(data_dir=tmp_path, gtts_timeout_s=3)
    assert set(ENGINES) == {"espeak", "gtts"}
    assert get_engine("espeak", settings).name == "espeak"
    gtts_engine = get_engine("gtts", settings)
    assert isinstance(gtts_engine, GttsEngine) and gtts_engine.timeout_s == 3
    with pytest.raises(UnknownEngineError, match="espeak"):
        get_engine("festival", settings)


# --- gTTS -------------------------------------------------------------------------------------------

def test_gtts_requires_a_timeout() -> None:
    """A GttsEngine cannot be built without a positive timeout (gTTS's default waits forever)."""
    with pytest.raises(ValueError, match="timeout"):
        GttsEngine(0)


def test_gtts_times_out_on_a_peer_that_never_answers(
    monkeypatch: pytest.MonkeyPatch, silent_server: SilentServer,
) -> None:
    """A connected but silent endpoint makes gTTS fail within about the timeout, not hang."""
    point_gtts_at(monkeypatch, silent_server.port)
    start = time.monotonic()
    with pytest.raises(EngineUnavailableError, match="chunk 1/1"):
        GttsEngine(timeout_s=0.5).synthesize("Xin chào bà con.", voice="vi", rate=150)
    assert time.monotonic() - start < 5
    assert silent_server.connections  # it really did reach the endpoint


def test_gtts_refused_connection_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection (nothing listening) is an EngineUnavailableError, not a crash."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    point_gtts_at(monkeypatch, port)
    with pytest.raises(EngineUnavailableError):
        GttsEngine(timeout_s=2).synthesize("Xin chào.", voice="vi", rate=150)


def test_gtts_decodes_google_mp3_per_sentence_chunk(
    monkeypatch: pytest.MonkeyPatch, fake_google: FakeGoogle, clip: AudioSegment,
) -> None:
    """Long text is sent as sentence-bounded chunks and the MP3 answers are decoded and joined."""
    point_gtts_at(monkeypatch, fake_google.port)
    sentences = [
        "Ủy ban nhân dân phường Thọ Xương thông báo lịch tiêm chủng mở rộng.",
        "Thời gian từ bảy giờ đến mười một giờ sáng thứ bảy tuần này.",
        "Địa điểm tại trạm y tế phường, đề nghị phụ huynh mang theo sổ tiêm.",
    ]
    audio = GttsEngine(timeout_s=5).synthesize(" ".join(sentences), voice="vi", rate=150)
    assert len(fake_google.bodies) == 3
    assert audio.channels == 1 and audio.frame_rate == 24000
    assert abs(audio.duration_seconds - 3 * clip.duration_seconds) < 0.2
    assert audio.dBFS > -30


def test_fallback_to_espeak_when_gtts_times_out(
    monkeypatch: pytest.MonkeyPatch, silent_server: SilentServer, tmp_path: Path,
) -> None:
    """synthesize_with_fallback returns espeak audio plus the reason when gTTS times out."""
    point_gtts_at(monkeypatch, silent_server.port)
    settings = Settings(data_dir=tmp_path, gtts_timeout_s=0.5)
    audio, used, reason = synthesize_with_fallback("Xin chào bà con.", settings, engine="gtts",
                                                   voice="vi-vn-x-south", rate=None)
    assert used == "espeak"
    assert reason is not None and "gtts" in reason
    assert audio.duration_seconds > 0.5 and audio.frame_rate == 22050


def test_no_fallback_when_gtts_works(monkeypatch: pytest.MonkeyPatch, fake_google: FakeGoogle,
                                     tmp_path: Path) -> None:
    """When Google answers, gTTS audio is used and no fallback reason is reported."""
    point_gtts_at(monkeypatch, fake_google.port)
    settings = Settings(data_dir=tmp_path, tts_engine="gtts")
    audio, used, reason = synthesize_with_fallback("Xin chào.", settings, engine=None, voice=None, rate=None)
    assert (used, reason) == ("gtts", None)
    assert audio.frame_rate == 24000


def test_fallback_does_not_hide_caller_mistakes(tmp_path: Path) -> None:
    """An unknown engine name is an error, never silently replaced by espeak."""
    with pytest.raises(UnknownEngineError):
        synthesize_with_fallback("Xin chào.", Settings(data_dir=tmp_path), engine="nope",
                                 voice=None, rate=None)
