"""Turn bulletin text (or an uploaded recording) into a stored, broadcast-ready MP3, once.

Caching: the key covers everything that changes the audio (normalised sentences, engine, voice,
rate, chime and its file, loudness, sample rate, bitrate, lexicon version, PIPELINE_VERSION), so a
hit is returned without synthesis. When the requested engine failed and espeak stood in, the result
is recorded under the requested key only as a *fallback* entry that is honoured for
``FALLBACK_RETRY_S``: repeated prepares during an outage do not each wait for a timeout, and once it
expires the requested engine is tried again and a success replaces the entry. The same audio is
also recorded under the espeak key, because that is exactly what it is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radio.sound.ffmpeg import AudioSegment, decode_any, mp3_duration, probe_duration
from radio.sound.pipeline import concat, encode_mp3, finish, silence, to_speech_format
from radio.sound.store import AudioStore
from radio.speech.chunking import split_bulletin
from radio.speech.engines import (
    FALLBACK_ENGINE,
    Engine,
    SpeechError,
    fallback_voice,
    get_engine,
)

if TYPE_CHECKING:
    from radio.settings import Settings

log = logging.getLogger(__name__)

PIPELINE_VERSION = "1"
FALLBACK_RETRY_S = 900.0
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
UPLOAD_ENGINE = "upload"

Progress = Callable[[int, int], None]


class BulletinTextError(ValueError):
    """A bulletin text is empty, too long or has nothing speakable."""


@dataclass(frozen=True, kw_only=True)
class PreparedAudio:
    """A stored MP3 ready to broadcast."""

    sha256: str
    path: Path
    duration_s: float
    engine: str
    fallback_reason: str | None
    cached: bool


# Normalised bulletin structure: bulletins -> paragraphs -> sentences.
Script = list[list[list[str]]]


def _script(texts: Sequence[str], settings: Settings) -> Script:
    from radio.speech.lexicon import default_lexicon
    from radio.speech.normalize import normalize

    if isinstance(texts, str):
        texts = [texts]  # a bare string is a Sequence[str] of characters: never what was meant
    if not texts:
        raise BulletinTextError("no bulletin text given")
    lexicon = default_lexicon()
    script: Script = []
    for number, text in enumerate(texts, 1):
        label = f"bulletin {number}" if len(texts) > 1 else "the bulletin"
        if not isinstance(text, str) or not text.strip():
            raise BulletinTextError(f"{label} is empty")
        if len(text) > settings.max_bulletin_chars:
            raise BulletinTextError(
                f"{label} is {len(text):,} characters long; the limit is {settings.max_bulletin_chars:,}"
            )
        paragraphs = [[spoken for s in para if (spoken := normalize(s, lexicon).strip())]
                      for para in split_bulletin(text)]
        paragraphs = [p for p in paragraphs if p]
        if not paragraphs:
            raise BulletinTextError(f"{label} has nothing to speak (only punctuation or symbols)")
        script.append(paragraphs)
    return script


@functools.lru_cache(maxsize=4)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _chime_identity(settings: Settings) -> str:
    """Changes when the chime file does, so replacing the jingle invalidates cached bulletins."""
    try:
        st = Path(settings.chime_file).stat()
    except FileNotFoundError:
        return "synthesised"
    return _file_digest(str(settings.chime_file), st.st_mtime_ns, st.st_size)


def _key(kind: str, settings: Settings, **parts: Any) -> str:
    payload = {
        "kind": kind,
        "pipeline": PIPELINE_VERSION,
        "loudness": settings.loudness_target_dbfs,
        "sample_rate": settings.sample_rate,
        "bitrate": settings.mp3_bitrate,
        **parts,
    }
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _speech_key(script: Script, settings: Settings, engine: str, voice: str, rate: int, chime: bool) -> str:
    from radio.speech.lexicon import default_lexicon

    return _key(
        "speech", settings, script=script, engine=engine, voice=voice, rate=rate,
        chime=_chime_identity(settings) if chime else None,
        pauses=[settings.sentence_pause_ms, settings.paragraph_pause_ms],
        lexicon=default_lexicon().version,
    )


def _from_cache(store: AudioStore, key: str) -> PreparedAudio | None:
    entry = store.get_entry(key)
    if entry is None:
        return None
    reason = entry.get("fallback_reason")
    if reason and time.time() - float(entry.get("created_at", 0.0)) > FALLBACK_RETRY_S:
        return None  # a stand-in from an outage: time to try the requested engine again
    sha = str(entry["sha256"])
    duration = entry.get("duration_s")
    try:
        path = store.path_for(sha)
    except FileNotFoundError:  # deleted since get_entry looked: make it again
        return None
    return PreparedAudio(
        sha256=sha, path=path, duration_s=float(duration) if duration is not None else probe_duration(path),
        engine=str(entry.get("engine", "")), fallback_reason=reason, cached=True,
    )


def _speak(script: Script, engine: Engine, voice: str, rate: int, settings: Settings,
           progress: Progress | None) -> AudioSegment:
    """Synthesise sentence by sentence and join with the configured pauses (one join at the end)."""
    sr = settings.sample_rate
    sentence_gap = silence(settings.sentence_pause_ms, sr)
    paragraph_gap = silence(settings.paragraph_pause_ms, sr)
    total = sum(len(p) for bulletin in script for p in bulletin)
    pieces: list[AudioSegment] = []
    done = 0
    for bulletin in script:
        for paragraph in bulletin:
            if pieces:  # between paragraphs and between bulletins alike
                pieces.append(paragraph_gap)
            for index, sentence in enumerate(paragraph):
                if index:
                    pieces.append(sentence_gap)
                pieces.append(to_speech_format(engine.synthesize(sentence, voice=voice, rate=rate), sr))
                done += 1
                if progress is not None:
                    progress(done, total)
    return concat(pieces)


def _store_finished(
    audio: AudioSegment, settings: Settings, store: AudioStore, *, chime: bool
) -> tuple[str, float]:
    mp3 = encode_mp3(finish(audio, settings, chime=chime), settings.mp3_bitrate)
    sha = store.put_bytes(mp3, ".mp3")
    duration = mp3_duration(mp3)
    if duration is None:  # no Xing/LAME header (another ffmpeg build): decode to measure
        duration = probe_duration(store.path_for(sha))
    return sha, duration


def prepare_speech(
    texts: Sequence[str],
    settings: Settings,
    *,
    engine: str | None = None,
    voice: str | None = None,
    rate: int | None = None,
    chime: bool = True,
    progress: Progress | None = None,
    store: AudioStore | None = None,
) -> PreparedAudio:
    """Speak the bulletins in order as one MP3 in the store, reusing a cached rendition when possible.

    ``progress(done, total)`` is called after each sentence; if the requested engine fails and espeak
    takes over, counting restarts from zero for the espeak pass.
    """
    store = store or AudioStore(settings.audio_dir)
    name = engine or settings.tts_engine
    chosen = get_engine(name, settings)  # unknown names fail before any work
    voice = voice or settings.tts_voice
    rate = rate or settings.tts_rate
    script = _script(texts, settings)
    key = _speech_key(script, settings, name, voice, rate, chime)
    hit = _from_cache(store, key)
    if hit is not None:
        log.debug("speech cache hit %s", hit.sha256[:12])
        return hit

    used, reason = chosen.name, None
    started = time.perf_counter()
    try:
        speech = _speak(script, chosen, voice, rate, settings, progress)
    except SpeechError as exc:
        if name == FALLBACK_ENGINE:
            raise
        reason = f"{name}: {exc}"
        log.warning("speech engine failed, falling back to %s: %s", FALLBACK_ENGINE, reason)
        voice = fallback_voice(voice)
        backup = get_engine(FALLBACK_ENGINE, settings)
        used = backup.name
        speech = _speak(script, backup, voice, rate, settings, progress)

    sha, duration = _store_finished(speech, settings, store, chime=chime)
    now = time.time()
    store.set_key(key, sha, duration_s=duration, engine=used, fallback_reason=reason, created_at=now)
    if reason is not None:  # it is also a genuine espeak rendition: cache it as one
        store.set_key(_speech_key(script, settings, used, voice, rate, chime), sha, duration_s=duration,
                      engine=used, fallback_reason=None, created_at=now)
    log.info("prepared %.1f s of speech with %s in %.2f s (%s)", duration, used,
             time.perf_counter() - started, sha[:12])
    return PreparedAudio(sha256=sha, path=store.path_for(sha), duration_s=duration, engine=used,
                         fallback_reason=reason, cached=False)


def prepare_uploaded(data: bytes, settings: Settings, store: AudioStore | None = None, *,
                     chime: bool = False) -> PreparedAudio:
    """Loudness-normalise an uploaded recording (MP3/WAV/OGG/M4A/FLAC/WebM, sniffed by content)."""
    if not data:
        raise ValueError("the uploaded file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"the uploaded file is {len(data) / 2**20:.0f} MiB; the limit is "
                         f"{MAX_UPLOAD_BYTES // 2**20} MiB")
    store = store or AudioStore(settings.audio_dir)
    key = _key("upload", settings, source=hashlib.sha256(data).hexdigest(),
               chime=_chime_identity(settings) if chime else None)
    hit = _from_cache(store, key)
    if hit is not None:
        return hit
    audio = decode_any(data)  # AudioDecodeError (a ValueError) for anything that is not audio
    audio = to_speech_format(audio, settings.sample_rate)
    sha, duration = _store_finished(audio, settings, store, chime=chime)
    store.set_key(key, sha, duration_s=duration, engine=UPLOAD_ENGINE, fallback_reason=None,
                  created_at=time.time())
    return PreparedAudio(sha256=sha, path=store.path_for(sha), duration_s=duration, engine=UPLOAD_ENGINE,
                         fallback_reason=None, cached=False)
