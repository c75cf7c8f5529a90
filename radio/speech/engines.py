"""Speech engines: offline espeak-ng (through ctypes) and online Google TTS, plus a small registry.

Errors come in two kinds: ``ValueError`` subclasses for caller mistakes (unknown engine or voice,
bad rate) and :class:`SpeechError` when an engine cannot produce audio right now (no library, no
network). Only the latter triggers the fallback to espeak in :func:`synthesize_with_fallback`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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


def _locate_espeak() -> tuple[str, bytes | None]:
    """Library path and data path: the espeakng-loader wheel first, else a system libespeak-ng."""
    try:
        import espeakng_loader

        lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        if Path(lib).exists():
            return lib, data.encode()
    except (ImportError, RuntimeError) as exc:
        log.debug("espeakng-loader unusable: %s", exc)
    system = ctypes.util.find_library("espeak-ng")
    if system is None:
        raise EngineUnavailableError(
            "espeak-ng not found: install the espeakng-loader package or the system libespeak-ng"
        )
    return system, None  # the system library knows its own data directory


class _Espeak:
    """The process-global espeak-ng instance; every method must be called with ``_ESPEAK_LOCK`` held."""

    def __init__(self) -> None:
        path, data = _locate_espeak()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise EngineUnavailableError(f"cannot load espeak-ng from {path}: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EngineUnavailableError(f"espeak-ng failed to initialise (data path {data!r})")
        self.lib = lib
        self.sample_rate = int(rate)
        self._chunks: list[bytes] = []
        # Held on the instance for the life of the process: if ctypes' thunk were collected,
        # espeak would call freed memory.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], samples: int, _events: int) -> int:
        if samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, samples * 2))
        return 0  # 0 = continue

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> bytes:
        if voice != self._voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise UnknownVoiceError(f"espeak-ng has no voice {voice!r}")
            self._voice = voice
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        encoded = text.encode("utf-8") + b"\0"
        self._chunks = []
        err = self.lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != _EE_OK:
            raise SpeechError(f"espeak-ng synthesis failed (error {err})")
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

    def synthesize(self, text: str, *, voice: str, rate: int) -> AudioSegment:
        voice = voice.lower()
        if voice not in ESPEAK_VOICES:
            raise UnknownVoiceError(
                f"unknown espeak voice {voice!r}; choose one of {', '.join(ESPEAK_VOICES)}"
            )
        if not 80 <= rate <= 450:
            raise ValueError(f"espeak rate must be 80..450 words per minute, got {rate}")
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
                    f"Google TTS failed on chunk {number}/{len(pieces)}: {exc}"
                ) from exc
            except AssertionError:
                continue  # gTTS asserts when a chunk is only punctuation: nothing to say
            try:
                decoded = decode_any(buf.getvalue())
            except AudioDecodeError as exc:
                raise EngineUnavailableError(
                    f"Google TTS returned no usable audio for chunk {number}: {exc}"
                ) from exc
            audio.append(decoded)
        if not audio:
            return AudioSegment.silent(duration=0, frame_rate=24000)
        rate_hz = audio[0].frame_rate
        return concat([to_speech_format(a, rate_hz) for a in audio])


# --- registry -------------------------------------------------------------------------------------

EngineFactory = Callable[["Settings"], Engine]
ENGINES: tuple[str, ...] = ("espeak", "gtts")
_FACTORIES: dict[str, EngineFactory] = {
    "espeak": lambda settings: EspeakEngine(),
    "gtts": lambda settings: GttsEngine(settings.gtts_timeout_s),
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
            f"unknown speech engine {name!r}; choose one of {', '.join(_FACTORIES)}"
        ) from None
    return factory(settings)


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
    chosen = get_engine(name, settings)
    voice = voice or settings.tts_voice
    rate = rate or settings.tts_rate
    try:
        return chosen.synthesize(text, voice=voice, rate=rate), chosen.name, None
    except SpeechError as exc:
        if name == FALLBACK_ENGINE:
            raise
        reason = f"{name}: {exc}"
        log.warning("speech engine failed, falling back to %s: %s", FALLBACK_ENGINE, reason)
    backup = get_engine(FALLBACK_ENGINE, settings)
    return backup.synthesize(text, voice=fallback_voice(voice), rate=rate), backup.name, reason
