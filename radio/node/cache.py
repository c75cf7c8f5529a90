"""The node's local audio cache: content-addressed files ``<sha256>.<format>``, size-capped, least recently used out.

Every hit is verified against its name before it is handed out (an SD card can rot); a file that no
longer matches is deleted and counts as a miss. Files pinned by commands still waiting to play are never
evicted, even if that leaves the cache over its cap for a while.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)
NAME = re.compile(r"^([0-9a-f]{64})\.([a-z0-9]{1,8})$")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class AudioCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, int] = OrderedDict()  # file name -> size, oldest use first
        self._pins: dict[str, int] = {}
        self._scan()

    @property
    def size(self) -> int:
        return sum(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def path_for(self, sha256: str, fmt: str) -> Path:
        return self.directory / f"{sha256}.{fmt}"

    def lookup(self, sha256: str, fmt: str) -> Path | None:
        """The verified cached file, marked as just used; None if absent or corrupt (then it is removed)."""
        path = self.path_for(sha256, fmt)
        if path.name not in self._entries:
            return None
        try:
            good = sha256_file(path) == sha256
        except OSError:
            good = False
        if not good:
            log.warning("cached audio %s is corrupt or gone; dropping it", path.name)
            self._remove(path.name)
            return None
        self._entries.move_to_end(path.name)
        try:
            os.utime(path)  # the LRU order survives a restart
        except OSError:
            pass
        return path

    def store(self, sha256: str, fmt: str, data: bytes) -> Path:
        """Write verified bytes atomically, then evict least recently used files over the cap."""
        if sha256_of(data) != sha256:
            raise ValueError("refusing to cache audio that does not match its sha256")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(sha256, fmt)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        self._entries[path.name] = len(data)
        self._entries.move_to_end(path.name)
        self.evict()
        return path

    def pin(self, sha256: str, fmt: str) -> None:
        name = f"{sha256}.{fmt}"
        self._pins[name] = self._pins.get(name, 0) + 1

    def unpin(self, sha256: str, fmt: str) -> None:
        name = f"{sha256}.{fmt}"
        left = self._pins.get(name, 0) - 1
        if left > 0:
            self._pins[name] = left
        else:
            self._pins.pop(name, None)

    def evict(self) -> list[str]:
        removed: list[str] = []
        for name in list(self._entries):
            if self.size <= self.max_bytes:
                break
            if name in self._pins:
                continue
            self._remove(name)
            removed.append(name)
        if removed:
            log.info("audio cache over %d bytes: evicted %d file(s)", self.max_bytes, len(removed))
        return removed

    def _remove(self, name: str) -> None:
        self._entries.pop(name, None)
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            pass

    def _scan(self) -> None:
        if not self.directory.is_dir():
            return
        found: list[tuple[float, str, int]] = []
        for path in self.directory.iterdir():
            if path.name.endswith(".part"):
                path.unlink(missing_ok=True)  # an interrupted download
                continue
            if NAME.match(path.name) and path.is_file():
                st = path.stat()
                found.append((st.st_mtime, path.name, st.st_size))
        for _, name, size in sorted(found):
            self._entries[name] = size
        self.evict()
