"""The audio route nodes download from: the stored bytes by content hash, served from memory after the first fetch."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from radio.service import Service
from radio.settings import Settings
from radio.sound.store import AudioStore
from radio.web import app as web_app
from radio.web.app import create_app


@pytest.fixture
def service(make_settings: Callable[..., Settings]) -> Iterator[Service]:
    service = Service(make_settings())
    service.settings.audio_dir.mkdir(parents=True, exist_ok=True)
    yield service
    service.engine.dispose()


def test_audio_is_served_by_hash_with_its_exact_bytes_many_times(service: Service) -> None:
    """Every fetch returns the stored bytes (a node checks their sha256), immutable for caches; an unknown hash is 404."""
    data = os.urandom(50_000)
    sha = AudioStore(service.settings.audio_dir).put_bytes(data)
    with TestClient(create_app(service, manage=False)) as client:
        for _ in range(3):  # the first from disk, the others from memory
            r = client.get(f"/audio/{sha}.mp3")
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
            assert r.headers["content-type"] == "audio/mpeg" and "immutable" in r.headers["cache-control"]
            assert int(r.headers["content-length"]) == len(data)
        assert client.get(f"/audio/{'0' * 64}.mp3").status_code == 404
        assert client.get(f"/audio/{sha.upper()}.mp3").status_code == 404


def test_files_too_big_for_memory_are_streamed_from_disk(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long recording is not held in memory, and is still served whole."""
    monkeypatch.setattr(web_app, "AUDIO_CACHE_FILE_MAX", 10_000)
    data = os.urandom(30_000)
    sha = AudioStore(service.settings.audio_dir).put_bytes(data)
    with TestClient(create_app(service, manage=False)) as client:
        r = client.get(f"/audio/{sha}.mp3")
        assert r.status_code == 200 and r.content == data


def test_the_memory_cache_keeps_the_most_recently_served_within_its_size() -> None:
    """Least recently served out first; never over its size (unless one file alone is bigger)."""
    cache = web_app._AudioCache(max_bytes=100)
    cache.put("a", b"x" * 40)
    cache.put("b", b"y" * 40)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", b"z" * 40)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"x" * 40, None, b"z" * 40)
