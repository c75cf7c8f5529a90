"""Turn bulletin text (or an uploaded recording) into a stored, broadcast-ready MP3, once.

A playlist (:func:`prepare_playlist`) is a sequence of :class:`SpeechPart` bulletins, each with its
own engine, voice and rate; :func:`prepare_speech` is the one-engine special case. Every part is
normalised with the site lexicon (shipped + the officer's local file), split into paragraphs and
sentences, spoken sentence by sentence with the configured pauses, and the parts are joined with the
paragraph pause; one chime, one loudness pass and one MP3 encode finish the whole.

Caching: the key covers everything that changes the audio (per part: normalised sentences, engine,
engine identity such as espeak's pitch or the Piper model's hash, voice, rate; then chime and its
file, pauses, loudness, sample rate, bitrate, site lexicon version, PIPELINE_VERSION), so a hit is
returned without synthesis. When a requested engine failed and espeak stood in, the result is
recorded under the requested key only as a *fallback* entry that is honoured for
``FALLBACK_RETRY_S``: repeated prepares during an outage do not each wait for a timeout, and once it
expires the requested engine is tried again and a success replaces the entry. The same audio is
also recorded under the key of what was really spoken (espeak for the failed parts), because that
is exactly what it is.
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
from radio.sound.store import AudioStore, preparing
from radio.speech.chunking import split_bulletin
from radio.speech.engines import (
    FALLBACK_ENGINE,
    Engine,
    SpeechError,
    engine_identity,
    fallback_voice,
    get_engine,
)

if TYPE_CHECKING:
    from radio.settings import Settings
    from radio.speech.lexicon import Lexicon

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


# A normalised bulletin: paragraphs -> sentences (spoken forms).
Script = list[list[str]]


@dataclass(frozen=True)
class SpeechPart:
    """One bulletin of a playlist, with its own engine, voice and rate (None: the site default)."""

    text: str
    engine: str | None = None
    voice: str | None = None
    rate: int | None = None


def _vi_count(n: int) -> str:
    """A count as Vietnamese writes it: 20001 → "20.001"."""
    return f"{n:,}".replace(",", ".")


def _speakable(sentence: str) -> bool:
    return any(c.isalnum() for c in sentence)


def _script(text: object, label: str, settings: Settings, lexicon: Lexicon) -> Script:
    from radio.speech.normalize import normalize

    if not isinstance(text, str) or not text.strip():
        raise BulletinTextError(f"{label} không có nội dung")
    if len(text) > settings.max_bulletin_chars:
        raise BulletinTextError(
            f"{label} dài {_vi_count(len(text))} ký tự; giới hạn là {_vi_count(settings.max_bulletin_chars)} ký tự"
        )
    # A sentence with no letter or digit left (only punctuation) has nothing to say: no silent clip for it.
    paragraphs = [[spoken for s in para if _speakable(spoken := normalize(s, lexicon).strip())]
                  for para in split_bulletin(text)]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise BulletinTextError(f"{label} không có gì để đọc (chỉ có dấu câu hoặc ký hiệu)")
    return paragraphs


@dataclass
class _Plan:
    """A part resolved against the site defaults: what was asked for, and the engine to ask."""

    number: int
    script: Script
    name: str
    engine: Engine | None  # None: the engine could not even be built (its SpeechError is in ``broken``)
    broken: str | None
    voice: str
    rate: int

    def key_part(self) -> dict[str, Any]:
        identity = engine_identity(self.engine) if self.engine is not None else "unavailable"
        return {"script": self.script, "engine": self.name, "identity": identity, "voice": self.voice,
                "rate": self.rate}


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


def _speech_key(plans: Sequence[_Plan], settings: Settings, chime: bool, lexicon_version: str) -> str:
    return _key(
        "speech", settings, parts=[plan.key_part() for plan in plans],
        chime=_chime_identity(settings) if chime else None,
        pauses=[settings.sentence_pause_ms, settings.paragraph_pause_ms],
        lexicon=lexicon_version,
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
           tick: Callable[[], None]) -> list[AudioSegment]:
    """One part, sentence by sentence, with the sentence and paragraph pauses between (not before)."""
    sr = settings.sample_rate
    sentence_gap = silence(settings.sentence_pause_ms, sr)
    paragraph_gap = silence(settings.paragraph_pause_ms, sr)
    pieces: list[AudioSegment] = []
    for number, paragraph in enumerate(script):
        if number:
            pieces.append(paragraph_gap)
        for index, sentence in enumerate(paragraph):
            if index:
                pieces.append(sentence_gap)
            pieces.append(to_speech_format(engine.synthesize(sentence, voice=voice, rate=rate), sr))
            tick()
    return pieces


def _plans(parts: Sequence[SpeechPart], settings: Settings, lexicon: Lexicon) -> list[_Plan]:
    if isinstance(parts, str | SpeechPart):
        parts = [parts]  # a bare string is a Sequence[str] of characters
    if not parts:
        raise BulletinTextError("chưa có nội dung bản tin")
    plans: list[_Plan] = []
    for number, part in enumerate(parts, 1):
        if isinstance(part, str):
            part = SpeechPart(part)
        name = part.engine or settings.tts_engine
        engine: Engine | None = None
        broken = None
        try:
            engine = get_engine(name, settings)  # unknown names fail before any work
        except SpeechError as exc:
            broken = str(exc)
        plans.append(_Plan(number=number, script=[], name=name, engine=engine, broken=broken,
                           voice=part.voice or settings.tts_voice, rate=part.rate or settings.tts_rate))
    for plan, part in zip(plans, parts, strict=True):
        label = f"bản tin {plan.number}" if len(plans) > 1 else "bản tin"
        plan.script = _script(part.text if isinstance(part, SpeechPart) else part, label, settings, lexicon)
    return plans


def _describe_fallbacks(failures: dict[tuple[str, str], list[int]], parts: int) -> str | None:
    """"gtts: timed out" for one bulletin; "gtts: timed out (bản tin 1, 3)" in a longer playlist."""
    if not failures:
        return None
    reasons = []
    for (name, message), numbers in failures.items():
        where = ""
        if parts > 1:
            where = f" (bản tin {', '.join(map(str, numbers))})"
        reasons.append(f"{name}: {message}{where}")
    return "; ".join(reasons)


def prepare_playlist(
    parts: Sequence[SpeechPart],
    settings: Settings,
    *,
    chime: bool = True,
    progress: Progress | None = None,
    store: AudioStore | None = None,
) -> PreparedAudio:
    """Speak the parts in order, each with its own engine, voice and rate, as one MP3 in the store.

    Parts are joined with the paragraph pause; one chime starts the whole, and the result is
    loudness-normalised and encoded once. The cache key covers every part. If a part's engine fails,
    espeak speaks that part (and any later part asking for the same engine, without trying it again)
    and the reasons are joined in ``fallback_reason``; ``engine`` lists the engines used, joined by "+".

    ``progress(done, total)`` is called after each sentence; when a part falls back, counting goes back
    to the start of that part.
    """
    from radio.speech.lexicon import site_lexicon

    store = store or AudioStore(settings.audio_dir)
    lexicon = site_lexicon(settings)
    plans = _plans(parts, settings, lexicon)
    key = _speech_key(plans, settings, chime, lexicon.version)
    hit = _from_cache(store, key)
    if hit is None:
        with preparing(key):  # the same content asked for at once is spoken once
            hit = _from_cache(store, key)
            if hit is None:
                return _speak_playlist(plans, key, lexicon.version, settings, store, chime, progress)
    log.debug("speech cache hit %s", hit.sha256[:12])
    return hit


def _speak_playlist(plans: list[_Plan], key: str, lexicon_version: str, settings: Settings, store: AudioStore,
                    chime: bool, progress: Progress | None) -> PreparedAudio:
    started = time.perf_counter()
    total = sum(len(paragraph) for plan in plans for paragraph in plan.script)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    backup = get_engine(FALLBACK_ENGINE, settings)
    failed: dict[str, str] = {}  # engine name -> why it failed in this run: not asked again
    failures: dict[tuple[str, str], list[int]] = {}
    actual: list[_Plan] = []  # what was really spoken, for the stand-in's own cache key
    pieces: list[AudioSegment] = []
    paragraph_gap = silence(settings.paragraph_pause_ms, settings.sample_rate)
    for plan in plans:
        if pieces:
            pieces.append(paragraph_gap)
        at_start = done
        message = plan.broken or failed.get(plan.name)
        if message is None and plan.engine is not None:
            try:
                pieces += _speak(plan.script, plan.engine, plan.voice, plan.rate, settings, tick)
                actual.append(plan)
                continue
            except SpeechError as exc:
                if plan.name == FALLBACK_ENGINE:
                    raise
                message = failed[plan.name] = str(exc)
                done = at_start
        assert message is not None
        log.warning("speech engine %s failed for bulletin %d, falling back to %s: %s", plan.name, plan.number,
                    FALLBACK_ENGINE, message)
        failures.setdefault((plan.name, message), []).append(plan.number)
        stand_in = _Plan(number=plan.number, script=plan.script, name=FALLBACK_ENGINE, engine=backup, broken=None,
                         voice=fallback_voice(plan.voice), rate=plan.rate)
        pieces += _speak(stand_in.script, backup, stand_in.voice, stand_in.rate, settings, tick)
        actual.append(stand_in)

    reason = _describe_fallbacks(failures, len(plans))
    used = "+".join(dict.fromkeys(plan.name for plan in actual))
    sha, duration = _store_finished(concat(pieces), settings, store, chime=chime)
    now = time.time()
    store.set_key(key, sha, duration_s=duration, engine=used, fallback_reason=reason, created_at=now)
    if reason is not None:  # it is also a genuine rendition of what was spoken: cache it as one
        store.set_key(_speech_key(actual, settings, chime, lexicon_version), sha, duration_s=duration,
                      engine=used, fallback_reason=None, created_at=now)
    log.info("prepared %.1f s of speech with %s in %.2f s (%s)", duration, used,
             time.perf_counter() - started, sha[:12])
    return PreparedAudio(sha256=sha, path=store.path_for(sha), duration_s=duration, engine=used,
                         fallback_reason=reason, cached=False)


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
    """Speak the bulletins in order with one engine, voice and rate as one MP3 in the store, reusing a
    cached rendition when possible (see :func:`prepare_playlist`, which this calls).

    ``progress(done, total)`` is called after each sentence; if the requested engine fails and espeak
    takes over, counting restarts from the start of the bulletin that failed.
    """
    if isinstance(texts, str):
        texts = [texts]  # a bare string is a Sequence[str] of characters: never what was meant
    parts = [SpeechPart(text, engine, voice, rate) for text in texts]
    return prepare_playlist(parts, settings, chime=chime, progress=progress, store=store)


def _store_finished(
    audio: AudioSegment, settings: Settings, store: AudioStore, *, chime: bool
) -> tuple[str, float]:
    mp3 = encode_mp3(finish(audio, settings, chime=chime), settings.mp3_bitrate)
    sha = store.put_bytes(mp3, ".mp3")
    duration = mp3_duration(mp3)
    if duration is None:  # no Xing/LAME header (another ffmpeg build): decode to measure
        duration = probe_duration(store.path_for(sha))
    return sha, duration


def prepare_uploaded(data: bytes, settings: Settings, store: AudioStore | None = None, *,
                     chime: bool = False) -> PreparedAudio:
    """Loudness-normalise an uploaded recording (MP3/WAV/OGG/M4A/FLAC/WebM, sniffed by content)."""
    if not data:
        raise ValueError("tệp tải lên trống")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"tệp tải lên nặng {len(data) / 2**20:.0f} MiB; giới hạn là "
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
