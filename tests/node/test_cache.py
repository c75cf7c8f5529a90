"""The node's audio cache: verified hits, least recently used out past the cap, pinned files kept, restart-safe."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from radio.node.cache import AudioCache
from radio.node.journal import Journal


def _blob(n: int, size: int = 1000) -> tuple[bytes, str]:
    data = bytes([n]) * size
    return data, hashlib.sha256(data).hexdigest()


def test_least_recently_used_files_go_first_and_pins_are_kept(tmp_path: Path) -> None:
    """With room for two files, storing a third evicts the least recently used one that is not pinned."""
    cache = AudioCache(tmp_path, max_bytes=2500)
    (a, ha), (b, hb), (c, hc) = _blob(1), _blob(2), _blob(3)
    cache.store(ha, "mp3", a)
    cache.store(hb, "mp3", b)
    assert cache.lookup(ha, "mp3") is not None  # a is now the most recently used
    cache.store(hc, "mp3", c)
    assert cache.lookup(hb, "mp3") is None and cache.lookup(ha, "mp3") is not None
    cache.pin(ha, "mp3")
    d, hd = _blob(4)
    cache.store(hd, "mp3", d)
    assert cache.lookup(ha, "mp3") is not None and cache.lookup(hc, "mp3") is None
    assert cache.size <= 2500


def test_a_rotten_file_is_a_miss_and_is_removed(tmp_path: Path) -> None:
    """A cached file that no longer matches its hash is never handed out."""
    cache = AudioCache(tmp_path, max_bytes=10_000)
    data, digest = _blob(5)
    path = cache.store(digest, "mp3", data)
    path.write_bytes(b"rot" + data[3:])
    assert cache.lookup(digest, "mp3") is None and not path.exists()


def test_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    """Only verified audio enters the cache."""
    with pytest.raises(ValueError):
        AudioCache(tmp_path, 10_000).store("0" * 64, "mp3", b"x")


def test_a_restart_finds_the_files_in_their_use_order_and_drops_partial_downloads(tmp_path: Path) -> None:
    """The index is rebuilt from the directory (by mtime); leftover .part files are deleted; other files ignored."""
    cache = AudioCache(tmp_path, max_bytes=10_000)
    (a, ha), (b, hb) = _blob(1), _blob(2)
    pa = cache.store(ha, "mp3", a)
    cache.store(hb, "mp3", b)
    os.utime(pa, (1, 1))  # a: long unused
    (tmp_path / "x.mp3.part").write_bytes(b"half")
    (tmp_path / "journal.jsonl").write_text("")
    again = AudioCache(tmp_path, max_bytes=1500)
    assert not (tmp_path / "x.mp3.part").exists() and (tmp_path / "journal.jsonl").exists()
    assert again.lookup(ha, "mp3") is None and again.lookup(hb, "mp3") is not None


def test_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    """A half-written last line (power cut) is skipped; everything before it is kept."""
    journal = Journal(tmp_path)
    journal.open(0)
    journal.close()
    with (tmp_path / "journal.jsonl").open("a") as f:
        f.write('{"k":"cmd","v":{"v":1,"id":"c1","type":"stop","issued_at":"2026-01-01T00:00:00Z",'
                '"valid_until":"2999-01-01T00:00:00Z"}}\n{"k":"evt","v":{"v":1,')
    again = Journal(tmp_path)
    again.open(0)
    assert list(again.records) == ["c1"] and again.records["c1"].last is None
    again.close()
