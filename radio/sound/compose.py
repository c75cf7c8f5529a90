"""Join stored audio pieces (spoken bulletins, uploaded recordings, jingles) into one programme file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from radio.settings import Settings
from radio.sound.ffmpeg import decode_any, mp3_duration, probe_duration
from radio.sound.pipeline import concat, encode_mp3, finish, silence, to_speech_format
from radio.sound.store import AudioStore, preparing
from radio.speech.prepare import PreparedAudio

COMPOSE_VERSION = "1"


def compose(pieces: Sequence[str], settings: Settings, store: AudioStore, *, chime: bool = True) -> PreparedAudio:
    """One MP3 of the stored pieces (by sha256) in order, paragraph pauses between, one chime, normalised once."""
    key = "compose:" + hashlib.sha256("|".join([
        COMPOSE_VERSION, *pieces, str(chime), str(settings.paragraph_pause_ms), str(settings.loudness_target_dbfs),
        str(settings.sample_rate), settings.mp3_bitrate, str(settings.chime_file),
    ]).encode()).hexdigest()
    hit = _cached(store, key)
    if hit is not None:
        return hit
    with preparing(key):  # the same playlist fired in many zones at once is composed once
        return _cached(store, key) or _compose(pieces, key, settings, store, chime)


def _cached(store: AudioStore, key: str) -> PreparedAudio | None:
    entry = store.get_entry(key)
    if entry is None:
        return None
    sha = str(entry["sha256"])
    return PreparedAudio(sha256=sha, path=store.path_for(sha), duration_s=float(entry["duration_s"]),
                         engine="compose", fallback_reason=None, cached=True)


def _compose(pieces: Sequence[str], key: str, settings: Settings, store: AudioStore, chime: bool) -> PreparedAudio:
    gap = silence(settings.paragraph_pause_ms, settings.sample_rate)
    segments = []
    for i, sha in enumerate(pieces):
        if i:
            segments.append(gap)
        segments.append(to_speech_format(decode_any(store.path_for(sha)), settings.sample_rate))
    data = encode_mp3(finish(concat(segments), settings, chime=chime), settings.mp3_bitrate)
    sha = store.put_bytes(data, ".mp3")
    path = store.path_for(sha)
    duration = mp3_duration(data) or probe_duration(path)
    store.set_key(key, sha, duration_s=duration)
    return PreparedAudio(sha256=sha, path=path, duration_s=duration, engine="compose", fallback_reason=None,
                         cached=False)
