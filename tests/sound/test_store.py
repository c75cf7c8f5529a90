"""Content-addressed audio store: naming, idempotence, atomicity, digest validation, key index."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from radio.sound.store import AudioStore

DATA = b"ID3 not really audio, the store does not care" * 10
DIGEST = hashlib.sha256(DATA).hexdigest()


def test_put_bytes_names_file_by_sha256_under_two_char_folder(tmp_path: Path) -> None:
    """put_bytes stores the bytes at root/ab/<sha256>.mp3 and returns that hex digest."""
    store = AudioStore(tmp_path)
    digest = store.put_bytes(DATA)
    assert digest == DIGEST
    path = tmp_path / digest[:2] / f"{digest}.mp3"
    assert path.read_bytes() == DATA
    assert store.path_for(digest) == path
    assert store.exists(digest)


def test_put_bytes_is_idempotent_and_leaves_no_temp_files(tmp_path: Path) -> None:
    """Storing the same bytes twice keeps one untouched file and no leftover temp files."""
    store = AudioStore(tmp_path)
    store.put_bytes(DATA)
    path = store.path_for(DIGEST)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert store.put_bytes(DATA) == DIGEST
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_path_for_finds_any_suffix(tmp_path: Path) -> None:
    """path_for finds a stored file whatever suffix it was stored with."""
    store = AudioStore(tmp_path)
    digest = store.put_bytes(b"RIFF....WAVE", suffix=".wav")
    assert store.path_for(digest).name == f"{digest}.wav"


@pytest.mark.parametrize("bad", [
    "../etc/passwd",
    "../../" + "a" * 58,
    DIGEST.upper(),
    DIGEST[:63],
    DIGEST + "0",
    "g" * 64,
    "",
    DIGEST[:62] + "/.",
])
def test_malformed_digests_are_rejected(tmp_path: Path, bad: str) -> None:
    """Anything but 64 lowercase hex characters is a ValueError, so no path traversal is possible."""
    store = AudioStore(tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        store.path_for(bad)
    with pytest.raises(ValueError):
        store.exists(bad)
    with pytest.raises(ValueError):
        store.set_key("k", bad)


def test_missing_digest_is_not_found(tmp_path: Path) -> None:
    """A well-formed but unknown digest does not exist and path_for raises FileNotFoundError."""
    store = AudioStore(tmp_path)
    assert not store.exists("0" * 64)
    with pytest.raises(FileNotFoundError):
        store.path_for("0" * 64)


def test_bad_suffix_is_rejected(tmp_path: Path) -> None:
    """put_bytes refuses suffixes that could escape the file name."""
    with pytest.raises(ValueError, match="suffix"):
        AudioStore(tmp_path).put_bytes(DATA, suffix="/../x")


def test_key_index_round_trip(tmp_path: Path) -> None:
    """set_key/get_key map a cache key to a digest and keep extra fields such as the duration."""
    store = AudioStore(tmp_path)
    store.put_bytes(DATA)
    key = "speech|../../etc/passwd|vi|150"  # the key itself never becomes a path
    assert store.get_key(key) is None
    store.set_key(key, DIGEST, duration_s=12.5, engine="espeak")
    assert store.get_key(key) == DIGEST
    entry = store.get_entry(key)
    assert entry is not None and entry["duration_s"] == 12.5 and entry["engine"] == "espeak"
    assert all(p.parent == tmp_path / "keys" for p in (tmp_path / "keys").iterdir())
    store.delete_key(key)
    assert store.get_key(key) is None


def test_key_pointing_at_deleted_audio_is_a_miss(tmp_path: Path) -> None:
    """A key whose audio file was removed reads as absent, so the audio is made again."""
    store = AudioStore(tmp_path)
    store.put_bytes(DATA)
    store.set_key("k", DIGEST)
    store.path_for(DIGEST).unlink()
    assert store.get_key("k") is None


def test_corrupt_key_file_is_a_miss(tmp_path: Path) -> None:
    """An unreadable index entry is ignored rather than breaking preparation."""
    store = AudioStore(tmp_path)
    store.put_bytes(DATA)
    store.set_key("k", DIGEST)
    (key_file,) = (tmp_path / "keys").iterdir()
    key_file.write_text("{not json")
    assert store.get_key("k") is None
