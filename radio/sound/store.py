"""Content-addressed audio store: files named by their sha256, plus a small derived-audio key index.

Layout under ``root``::

    ab/abcdef...64hex.mp3     the audio, named by the sha256 of its bytes
    keys/<sha256(key)>.json   {"sha256": ..., "duration_s": ..., **extra} for a cache key

Every write goes to a temp file in the destination directory and is moved in with ``os.replace``,
so readers (the HTTP server handing files to nodes) never see a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SUFFIX_RE = re.compile(r"\.[a-z0-9]{1,8}")
# Striped locks for single-flight preparation: when every zone's 06:00 slot fires at once with the same
# content, one thread prepares it and the others wait, then hit the cache (instead of all synthesising).
_PREPARING = [threading.Lock() for _ in range(64)]


def preparing(cache_key: str) -> threading.Lock:
    """The lock to hold while preparing the audio for ``cache_key`` (re-check the cache once it is held)."""
    return _PREPARING[zlib.crc32(cache_key.encode()) % len(_PREPARING)]


class InvalidDigestError(ValueError):
    """A value used as an audio id is not 64 lowercase hex characters."""


def _check_digest(sha256: str) -> str:
    # fullmatch on a strict alphabet: nothing like "../" or "/etc" can ever reach a path join.
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise InvalidDigestError(f"not a sha256 digest (64 lowercase hex characters): {sha256!r:.80}")
    return sha256


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the web server may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AudioStore:
    """Audio files addressed by the sha256 of their content, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir_for(self, sha256: str) -> Path:
        return self.root / sha256[:2]

    def put_bytes(self, data: bytes, suffix: str = ".mp3") -> str:
        """Store ``data`` (idempotently) and return its hex sha256."""
        if not _SUFFIX_RE.fullmatch(suffix):
            raise ValueError(f"bad file suffix {suffix!r}: expected e.g. '.mp3'")
        digest = hashlib.sha256(data).hexdigest()
        target = self._dir_for(digest) / f"{digest}{suffix}"
        if not target.exists():
            _atomic_write(target, data)
            log.debug("stored %s (%d bytes)", target.name, len(data))
        return digest

    def path_for(self, sha256: str) -> Path:
        """Path of the stored file for ``sha256``, whatever its suffix; FileNotFoundError if absent."""
        _check_digest(sha256)
        folder = self._dir_for(sha256)
        common = folder / f"{sha256}.mp3"
        if common.is_file():  # the usual case, without listing the directory
            return common
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(sha256) and entry.name[64:65] in (".", ""):
                        return folder / entry.name
        except FileNotFoundError:
            pass
        raise FileNotFoundError(f"no audio stored for {sha256}")

    def exists(self, sha256: str) -> bool:
        """Whether audio with this digest is stored (ValueError for a malformed digest)."""
        try:
            self.path_for(sha256)
        except FileNotFoundError:
            return False
        return True

    # -- key index: cache key -> digest, so derived audio (speech, normalised uploads) is made once

    def _key_path(self, cache_key: str) -> Path:
        return self.root / "keys" / f"{hashlib.sha256(cache_key.encode('utf-8')).hexdigest()}.json"

    def get_entry(self, cache_key: str) -> dict[str, Any] | None:
        """The whole index record for ``cache_key`` if it points at audio still in the store."""
        try:
            record = json.loads(self._key_path(cache_key).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache index entry: %s", exc)
            return None
        if not isinstance(record, dict):
            return None
        entry: dict[str, Any] = record
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest) or not self.exists(digest):
            return None
        return entry

    def get_key(self, cache_key: str) -> str | None:
        """The digest recorded for ``cache_key``, or None (also when its audio has been deleted)."""
        record = self.get_entry(cache_key)
        return None if record is None else str(record["sha256"])

    def set_key(self, cache_key: str, sha256: str, *, duration_s: float | None = None, **extra: Any) -> None:
        """Record that ``cache_key`` produces the stored audio ``sha256`` (replacing any earlier record)."""
        _check_digest(sha256)
        record = {**extra, "sha256": sha256, "duration_s": duration_s}
        _atomic_write(self._key_path(cache_key), json.dumps(record, sort_keys=True).encode("utf-8"))

    def delete_key(self, cache_key: str) -> None:
        """Forget ``cache_key`` (the audio itself stays: other keys or schedules may use it)."""
        self._key_path(cache_key).unlink(missing_ok=True)
