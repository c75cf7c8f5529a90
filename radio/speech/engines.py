"""Speech engines: offline espeak-ng (through ctypes), online Google TTS and local Piper voices,
plus a small registry.

Errors come in two kinds: ``ValueError`` subclasses for caller mistakes (unknown engine or voice,
bad rate) and :class:`SpeechError` when an engine cannot produce audio right now (no library, no
network, no voice model). Only the latter triggers the fallback to espeak in
:func:`synthesize_with_fallback` and :func:`radio.speech.prepare.prepare_playlist`.

An engine may carry an ``identity`` string naming whatever else changes its audio (espeak's pitch,
the Piper model file); it is part of the audio cache key (see :func:`engine_identity`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import io
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from radio.sound.ffmpeg import AudioDecodeError, AudioSegment, decode_any
from radio.sound.pipeline import concat, to_speech_format
from radio.speech.chunking import group_sentences, split_sentences

if TYPE_CHECKING:
    from radio.settings import Settings

log = logging.getLogger(__name__)

ESPEAK_VOICES = ("vi", "vi-vn-x-central", "vi-vn-x-south")
FALLBACK_ENGINE = "espeak"


class SpeechError(RuntimeError):
    """An engine failed to produce audio for reasons other than the caller's input."""


class EngineUnavailableError(SpeechError):
    """The engine cannot run here or now (library missing, service unreachable or timing out)."""


class UnknownEngineError(ValueError):
    """No engine is registered under the requested name."""


class UnknownVoiceError(ValueError):
    """The engine has no such voice."""


class Engine(Protocol):
    """Turns (already normalised) text into mono 16-bit speech."""

    name: str

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment: ...


# --- espeak-ng through ctypes -------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report data errors instead of calling exit() in our process
_POS_CHARACTER = 1
_CHARS_UTF8 = 1  # and no espeakENDPAUSE: we add our own pauses between sentences
_RATE, _PITCH = 1, 3
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def _espeak_candidates() -> list[tuple[str, str, bytes | None]]:
    """Where espeak-ng can be loaded from, best first: ``(source, library path, data path)``.

    The system libespeak-ng (``apt install espeak-ng``) comes first when it exists: it is the one the
    site's administrator installed and updates, and it knows its own data directory. The
    espeakng-loader wheel, which bundles a library and its data, is the fallback.
    """
    candidates: list[tuple[str, str, bytes | None]] = []
    system = ctypes.util.find_library("espeak-ng")
    if system is not None:
        candidates.append(("system", system, None))
    try:
        import espeakng_loader

        lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        if Path(lib).exists():
            candidates.append(("wheel", lib, data.encode()))
    except (ImportError, RuntimeError) as exc:
        log.debug("espeakng-loader unusable: %s", exc)
    return candidates


def _locate_espeak() -> tuple[str, bytes | None]:
    """Library path and data path: the system libespeak-ng when present, else the espeakng-loader wheel."""
    candidates = _espeak_candidates()
    if not candidates:
        raise EngineUnavailableError(
            "không tìm thấy espeak-ng: hãy cài espeak-ng của hệ thống (apt install espeak-ng) "
            "hoặc gói espeakng-loader"
        )
    _, path, data = candidates[0]
    return path, data


def _load_espeak(path: str, data: bytes | None) -> tuple[ctypes.CDLL, int]:
    """Load and initialise one espeak-ng library; returns it with its sample rate."""
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise EngineUnavailableError(f"không nạp được espeak-ng từ {path}: {exc}") from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise EngineUnavailableError(f"espeak-ng không khởi động được (thư mục dữ liệu {data!r})")
    return lib, int(rate)


class _Espeak:
    """The process-global espeak-ng instance; every method must be called with ``_ESPEAK_LOCK`` held."""

    def __init__(self) -> None:
        candidates = _espeak_candidates()
        if not candidates:
            _locate_espeak()  # raises the "not found" error
        failures: list[str] = []
        for source, path, data in candidates:
            try:
                lib, rate = _load_espeak(path, data)
            except EngineUnavailableError as exc:  # e.g. a system library without its data: try the wheel
                log.warning("espeak-ng (%s) unusable: %s", source, exc)
                failures.append(str(exc))
                continue
            self.source, self.lib, self.sample_rate = source, lib, rate
            break
        else:
            raise EngineUnavailableError("; ".join(failures))
        self._chunks: list[bytes] = []
        # Held on the instance for the life of the process: if ctypes' thunk were collected,
        # espeak would call freed memory.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self.lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], samples: int, _events: int) -> int:
        if samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, samples * 2))
        return 0  # 0 = continue

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> bytes:
        if voice != self._voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise UnknownVoiceError(f"espeak-ng không có giọng {voice!r}")
            self._voice = voice
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        encoded = text.encode("utf-8") + b"\0"
        self._chunks = []
        err = self.lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != _EE_OK:
            raise SpeechError(f"espeak-ng không tổng hợp được giọng đọc (lỗi {err})")
        pcm, self._chunks = b"".join(self._chunks), []
        return pcm


_ESPEAK_LOCK = threading.Lock()
_ESPEAK: _Espeak | None = None


def _espeak() -> _Espeak:
    global _ESPEAK
    if _ESPEAK is None:
        _ESPEAK = _Espeak()
    return _ESPEAK


class EspeakEngine:
    """Offline Vietnamese speech from espeak-ng; robotic but always available and very fast."""

    name = "espeak"
    voices = ESPEAK_VOICES

    def __init__(self, *, pitch: int = 50) -> None:
        if not 0 <= pitch <= 100:
            raise ValueError(f"espeak pitch must be 0..100, got {pitch}")
        self.pitch = pitch

    @property
    def identity(self) -> str:
        return f"pitch={self.pitch}"

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        voice = voice.lower()
        if voice not in ESPEAK_VOICES:
            raise UnknownVoiceError(
                f"espeak không có giọng {voice!r}; hãy chọn một trong: {', '.join(ESPEAK_VOICES)}"
            )
        if not 80 <= rate <= 450:
            raise ValueError(f"tốc độ đọc của espeak phải từ 80 đến 450 từ mỗi phút, nhận được {rate}")
        with _ESPEAK_LOCK:
            engine = _espeak()
            pcm = engine.synth(text, voice, rate, self.pitch) if text.strip() else b""
            sample_rate = engine.sample_rate
        return AudioSegment(data=pcm, sample_width=2, frame_rate=sample_rate, channels=1)


# --- Google TTS -----------------------------------------------------------------------------------

GTTS_MAX_CHARS = 100  # gTTS's own per-request limit (gTTS.GOOGLE_TTS_MAX_CHARS)
GTTS_SLOW_BELOW_WPM = 120  # gTTS has two speeds; slower requested rates map to "slow"


class GttsEngine:
    """Google Translate's Vietnamese voice: natural, but needs the network (one voice only)."""

    name = "gtts"

    def __init__(self, timeout_s: float, *, tld: str = "com") -> None:
        if timeout_s <= 0:
            raise ValueError("gTTS needs a positive timeout (its default waits forever)")
        self.timeout_s = timeout_s
        self.tld = tld

    @property
    def identity(self) -> str:
        return f"tld={self.tld}"

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        # ``voice`` is accepted for the protocol; Google has a single Vietnamese voice.
        from gtts import gTTS, gTTSError

        pieces = group_sentences(split_sentences(text), GTTS_MAX_CHARS)
        audio: list[AudioSegment] = []
        for number, piece in enumerate(pieces, 1):
            buf = io.BytesIO()
            try:
                gTTS(piece, lang="vi", tld=self.tld, slow=rate < GTTS_SLOW_BELOW_WPM, lang_check=False,
                     timeout=self.timeout_s).write_to_fp(buf)
            except gTTSError as exc:
                raise EngineUnavailableError(
                    f"Google TTS lỗi ở đoạn {number}/{len(pieces)}: {exc}"
                ) from exc
            except AssertionError:
                continue  # gTTS asserts when a chunk is only punctuation: nothing to say
            try:
                decoded = decode_any(buf.getvalue())
            except AudioDecodeError as exc:
                raise EngineUnavailableError(
                    f"Google TTS không trả về âm thanh dùng được cho đoạn {number}: {exc}"
                ) from exc
            audio.append(decoded)
        if not audio:
            return AudioSegment.silent(duration=0, frame_rate=24000)
        rate_hz = audio[0].frame_rate
        return concat([to_speech_format(a, rate_hz) for a in audio])


# --- Piper (local neural voices) ------------------------------------------------------------------

PIPER_BASE_WPM = 150  # the requested rate at which a Piper voice speaks at its own natural speed
PIPER_TIMEOUT_S = 300.0  # for the external binary, per sentence (model load included)
_PIPER_DEFAULT_VOICES = ("default", *ESPEAK_VOICES)  # site-default voice names mean "the model's voice"


@dataclass(frozen=True)
class PiperVoiceInfo:
    """What the engine needs from a voice's ``<model>.onnx.json``."""

    sample_rate: int
    length_scale: float
    speakers: dict[str, int]
    language: str


@functools.lru_cache(maxsize=8)
def _piper_config(path: str, mtime_ns: int, size: int) -> PiperVoiceInfo:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        speakers = raw.get("speaker_id_map") or {}
        return PiperVoiceInfo(
            sample_rate=int(raw["audio"]["sample_rate"]),
            length_scale=float((raw.get("inference") or {}).get("length_scale", 1.0)),
            speakers={str(k): int(v) for k, v in speakers.items()},
            language=str((raw.get("espeak") or {}).get("voice", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EngineUnavailableError(f"không đọc được tệp cấu hình giọng Piper {path}: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _model_digest(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_PIPER_LOCK = threading.Lock()
_PIPER_VOICES: dict[tuple[str, int, int], Any] = {}  # (model, mtime, size) -> piper.PiperVoice


def _piper_voice(model: Path, config: Path) -> Any:
    """The loaded ``piper.PiperVoice`` for ``model`` (loaded once per file version and process)."""
    from piper import PiperVoice  # ImportError: the caller decides what that means

    st = model.stat()
    key = (str(model), st.st_mtime_ns, st.st_size)
    with _PIPER_LOCK:
        voice = _PIPER_VOICES.get(key)
        if voice is None:
            try:
                voice = PiperVoice.load(model, config_path=config)
            except Exception as exc:  # onnxruntime raises its own types for a corrupt or foreign file
                raise EngineUnavailableError(f"không nạp được mô hình giọng Piper {model}: {exc}") from exc
            if len(_PIPER_VOICES) >= 2:
                _PIPER_VOICES.clear()  # a voice is tens of MB: keep only the current few
            _PIPER_VOICES[key] = voice
    return voice


class PiperEngine:
    """A local neural voice from a Piper ``.onnx`` model (plus ``.onnx.json``): natural and offline.

    Runs in-process with the ``piper-tts`` package when it is installed, otherwise (or when
    ``binary`` is given) through the ``piper`` command. The voice is the model; ``voice`` picks a
    speaker of a multi-speaker model, and "default" or a site-default espeak name means the model's
    default speaker. ``rate`` (words per minute) scales the model's phoneme length around 150 wpm.
    """

    name = "piper"

    def __init__(self, model: Path | str | None, *, binary: str | None = None) -> None:
        self.model = Path(model).expanduser() if model else None
        self.binary = binary or None

    @classmethod
    def from_settings(cls, settings: Settings) -> PiperEngine:
        return cls(getattr(settings, "piper_model", None), binary=getattr(settings, "piper_binary", None))

    def _files(self) -> tuple[Path, Path]:
        if self.model is None:
            raise EngineUnavailableError(
                "chưa cấu hình mô hình giọng Piper: hãy đặt RADIO_PIPER_MODEL là một tệp giọng .onnx"
            )
        if not self.model.is_file():
            raise EngineUnavailableError(f"mô hình giọng Piper {self.model} không tồn tại")
        config = self.model.with_name(self.model.name + ".json")
        if not config.is_file():
            raise EngineUnavailableError(
                f"thiếu tệp cấu hình giọng Piper {config} (phải nằm cạnh mô hình, tên <model>.onnx.json)"
            )
        return self.model, config

    def info(self) -> PiperVoiceInfo:
        """The voice's sample rate, speakers and language; EngineUnavailableError without a usable model."""
        _, config = self._files()
        st = config.stat()
        return _piper_config(str(config), st.st_mtime_ns, st.st_size)

    @property
    def voices(self) -> tuple[str, ...]:
        """Names accepted as ``voice``: the model's speakers, or just "default" for a one-speaker model."""
        try:
            speakers = tuple(self.info().speakers)
        except EngineUnavailableError:
            speakers = ()
        return speakers or ("default",)

    @property
    def identity(self) -> str:
        """The model's content hash (computed once per file version), so a new model means new audio."""
        try:
            model, config = self._files()
        except EngineUnavailableError:
            return "unavailable"
        m, c = model.stat(), config.stat()
        return (f"{model.name}:{_model_digest(str(model), m.st_mtime_ns, m.st_size)[:16]}:"
                f"{_model_digest(str(config), c.st_mtime_ns, c.st_size)[:16]}")

    def _speaker(self, voice: str, info: PiperVoiceInfo) -> int | None:
        if voice in info.speakers:
            return info.speakers[voice]
        if voice.lower() in _PIPER_DEFAULT_VOICES or (self.model is not None and voice == self.model.stem):
            return None
        names = ", ".join(info.speakers) or "default"
        raise UnknownVoiceError(f"mô hình giọng Piper {self.model} không có giọng {voice!r}; hãy chọn một trong: {names}")

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        if not 80 <= rate <= 450:
            raise ValueError(f"tốc độ đọc của Piper phải từ 80 đến 450 từ mỗi phút, nhận được {rate}")
        model, config = self._files()
        info = self.info()
        speaker = self._speaker(voice, info)
        length_scale = info.length_scale * PIPER_BASE_WPM / rate
        text = " ".join(text.split())
        if not text:
            return AudioSegment.silent(duration=0, frame_rate=info.sample_rate)
        if self.binary is None:
            try:
                pcm = self._in_process(model, config, text, speaker, length_scale)
            except ImportError:
                found = shutil.which("piper")
                if found is None:
                    raise EngineUnavailableError(
                        "chưa cài Piper: hãy cài gói piper-tts hoặc đặt RADIO_PIPER_BINARY"
                    ) from None
                pcm = self._external(found, model, config, text, speaker, length_scale)
        else:
            pcm = self._external(self.binary, model, config, text, speaker, length_scale)
        return AudioSegment(data=pcm, sample_width=2, frame_rate=info.sample_rate, channels=1)

    @staticmethod
    def _in_process(model: Path, config: Path, text: str, speaker: int | None, length_scale: float) -> bytes:
        from piper import SynthesisConfig

        voice = _piper_voice(model, config)
        try:
            chunks = voice.synthesize(text, SynthesisConfig(speaker_id=speaker, length_scale=length_scale))
            return b"".join(chunk.audio_int16_bytes for chunk in chunks)
        except Exception as exc:  # phonemizer or onnxruntime failure: not the caller's input
            raise SpeechError(f"Piper không tổng hợp được giọng đọc: {exc}") from exc

    @staticmethod
    def _external(binary: str, model: Path, config: Path, text: str, speaker: int | None,
                  length_scale: float) -> bytes:
        # Underscore spellings are understood by both the C++ piper and the Python package's CLI.
        command = [binary, "--model", str(model), "--config", str(config), "--output_raw",
                   "--length_scale", f"{length_scale:.4f}"]
        if speaker is not None:
            command += ["--speaker", str(speaker)]
        try:
            done = subprocess.run(command, input=text.encode("utf-8") + b"\n", capture_output=True,
                                  timeout=PIPER_TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise EngineUnavailableError(f"không tìm thấy chương trình Piper {binary!r}") from None
        except PermissionError as exc:
            raise EngineUnavailableError(f"không chạy được chương trình Piper {binary!r}: {exc}") from None
        except subprocess.TimeoutExpired:
            raise EngineUnavailableError(f"Piper chạy quá {PIPER_TIMEOUT_S:.0f} giây") from None
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise SpeechError(f"Piper thoát với mã lỗi {done.returncode}: {' | '.join(tail)}")
        pcm = done.stdout
        return pcm[: len(pcm) - len(pcm) % 2]


# --- registry -------------------------------------------------------------------------------------

EngineFactory = Callable[["Settings"], Engine]
ENGINES: tuple[str, ...] = ("espeak", "gtts", "piper")
_FACTORIES: dict[str, EngineFactory] = {
    "espeak": lambda settings: EspeakEngine(pitch=getattr(settings, "espeak_pitch", 50)),
    "gtts": lambda settings: GttsEngine(settings.gtts_timeout_s),
    "piper": PiperEngine.from_settings,
}


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make an engine available by name (plug-ins, and tests that count calls at this boundary)."""
    _FACTORIES[name] = factory


def unregister_engine(name: str) -> None:
    """Remove an engine added with :func:`register_engine` (built-ins cannot be removed)."""
    if name in ENGINES:
        raise ValueError(f"cannot unregister built-in engine {name!r}")
    _FACTORIES.pop(name, None)


def engine_names() -> tuple[str, ...]:
    """Every registered engine name, built-ins first."""
    return tuple(_FACTORIES)


def get_engine(name: str, settings: Settings) -> Engine:
    """The engine registered as ``name``; ``UnknownEngineError`` lists the valid names otherwise."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownEngineError(
            f"không có bộ đọc {name!r}; hãy chọn một trong: {', '.join(_FACTORIES)}"
        ) from None
    return factory(settings)


def engine_identity(engine: Engine) -> str:
    """What besides name, voice and rate changes the engine's audio (for cache keys); "" if nothing."""
    return str(getattr(engine, "identity", ""))


def fallback_voice(voice: str) -> str:
    """The espeak voice to use when a request for ``voice`` on another engine falls back."""
    return voice.lower() if voice.lower() in ESPEAK_VOICES else "vi"


def synthesize_with_fallback(
    text: str, settings: Settings, *, engine: str | None = None, voice: str | None = None,
    rate: int | None = None,
) -> tuple[AudioSegment, str, str | None]:
    """Speak ``text``; if a non-espeak engine fails, warn and use espeak instead.

    Returns (audio, name of the engine actually used, reason for falling back or None).
    """
    name = engine or settings.tts_engine
    voice = voice or settings.tts_voice
    rate = rate or settings.tts_rate
    try:
        chosen = get_engine(name, settings)
        return chosen.synthesize(text, voice=voice, rate=rate), chosen.name, None
    except SpeechError as exc:
        if name == FALLBACK_ENGINE:
            raise
        reason = f"{name}: {exc}"
        log.warning("speech engine failed, falling back to %s: %s", FALLBACK_ENGINE, reason)
    backup = get_engine(FALLBACK_ENGINE, settings)
    return backup.synthesize(text, voice=fallback_voice(voice), rate=rate), backup.name, reason
