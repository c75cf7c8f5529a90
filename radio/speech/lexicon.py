"""Pronunciation lexicon: written form (usually an abbreviation) → spoken Vietnamese.

The lexicon lives in a UTF-8 TSV file, one ``written<TAB>spoken`` entry per line; blank lines and lines
starting with ``#`` are ignored. Written forms that contain no lower-case letter (``UBND``, ``HĐND``,
``CT-XH``) are matched case-sensitively, so an all-caps abbreviation never swallows an ordinary word;
written forms with lower-case letters (``Đoàn TN``, ``Zalo OA``, ``VNeID``) match in any case.

:attr:`Lexicon.version` is a hash of the normalised entries, so the audio cache key changes whenever
an entry changes, whatever order the entries are listed in.

Two files make up a site's lexicon (:func:`site_lexicon`): the shipped ``audio/lexicon.vi.tsv``
(part of the code, replaced on upgrade) and the officer's ``<data_dir>/lexicon.local.tsv`` (written by
the API, or by hand), layered on top: a local entry wins over a shipped one with the same written
form. The merged lexicon's version therefore covers both files.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from radio.settings import Settings

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 100
LOCAL_LEXICON_NAME = "lexicon.local.tsv"
_LOCAL_HEADER = (
    "# Officer additions to the pronunciation lexicon: written<TAB>spoken (UTF-8).\n"
    "# Written by the radio API (POST /api/v1/lexicon); may be edited by hand. Entries here override\n"
    "# the shipped audio/lexicon.vi.tsv. All-caps written forms match case-sensitively."
)
_FORBIDDEN_CHARS = ("\t", "\n", "\r")


def _clean(value: str, field: str) -> str:
    """Validate and normalise one field (NFC, stripped); raise ValueError naming the field."""
    if not isinstance(value, str):
        raise ValueError(f"{field} phải là chuỗi ký tự, không phải {type(value).__name__}")
    if any(c in value for c in _FORBIDDEN_CHARS):
        raise ValueError(f"{field} không được chứa dấu tab hoặc dấu xuống dòng: {value!r}")
    # Control characters (\v, \f, \x1c... split lines too) and lone surrogates can't be stored as a TSV line.
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value) or len(value.splitlines()) > 1:
        raise ValueError(f"{field} không được chứa ký tự điều khiển hoặc ký tự không hợp lệ: {value!r}")
    cleaned = unicodedata.normalize("NFC", value).strip()
    if not cleaned:
        raise ValueError(f"{field} không được để trống")
    if len(cleaned) > MAX_FIELD_CHARS:
        raise ValueError(f"{field} dài {len(cleaned)} ký tự; tối đa {MAX_FIELD_CHARS} ký tự")
    return cleaned


def is_case_sensitive(written: str) -> bool:
    """Whether ``written`` is matched case-sensitively: it has no lower-case letter (an abbreviation)."""
    return not any(c.islower() for c in written)


class Lexicon:
    """A mutable map of written forms to spoken forms, with a content hash for cache keys."""

    def __init__(self, entries: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._entries: dict[str, str] = {}
        self._version: str | None = None
        items = entries.items() if isinstance(entries, Mapping) else entries
        for written, spoken in items:
            self.add(written, spoken)

    # -- reading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        """Read a TSV lexicon; raise ValueError naming the line for a malformed or duplicate entry."""
        lexicon = cls()
        text = Path(path).read_text(encoding="utf-8-sig")  # tolerate a BOM from spreadsheet exports
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = raw.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: cần dạng 'chữ viết<TAB>cách đọc', nhận được {raw!r}")
            written, spoken = parts
            try:
                written_clean = _clean(written, "written")
                if written_clean in lexicon._entries:
                    raise ValueError(f"chữ viết {written_clean!r} có hai lần trong tệp")
                lexicon.add(written, spoken)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
        return lexicon

    @property
    def entries(self) -> dict[str, str]:
        """A copy of the entries (written → spoken); change them through :meth:`add`."""
        return dict(self._entries)

    @property
    def version(self) -> str:
        """SHA-256 hex of the sorted, normalised entries: changes exactly when the content changes."""
        if self._version is None:
            payload = "".join(f"{w}\t{s}\n" for w, s in sorted(self._entries.items()))
            self._version = hashlib.sha256(payload.encode("utf-8")).hexdigest()
        return self._version

    def get(self, written: str) -> str | None:
        """The spoken form of exactly ``written``, or None."""
        return self._entries.get(written)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, written: object) -> bool:
        return written in self._entries

    def __repr__(self) -> str:
        return f"Lexicon({len(self._entries)} entries, version={self.version[:12]})"

    # -- writing -------------------------------------------------------------------------------

    def add(self, written: str, spoken: str) -> None:
        """Add or replace an entry; raise ValueError for an empty, too long or multi-line field."""
        written_clean = _clean(written, "written")
        spoken_clean = _clean(spoken, "spoken")
        if written_clean.startswith("#"):
            raise ValueError(f"written không được bắt đầu bằng '#' (dòng đó sẽ thành chú thích): {written!r}")
        self._entries[written_clean] = spoken_clean
        self._version = None

    def remove(self, written: str) -> bool:
        """Remove the entry for ``written`` (normalised as :meth:`add` does); whether there was one."""
        key = unicodedata.normalize("NFC", written).strip() if isinstance(written, str) else written
        if key not in self._entries:
            return False
        del self._entries[key]
        self._version = None
        return True

    def merged(self, other: Lexicon) -> Lexicon:
        """A new lexicon with this one's entries, then ``other``'s on top (``other`` wins on clashes)."""
        merged = Lexicon()
        merged._entries = {**self._entries, **other._entries}
        return merged

    def save(self, path: Path, *, header: str | None = None) -> None:
        """Write the lexicon as TSV atomically (temp file in the same directory, then os.replace)."""
        path = Path(path)
        lines = [header or "# written<TAB>spoken (UTF-8); all-caps written forms match case-sensitively"]
        lines += [f"{w}\t{s}" for w, s in self._entries.items()]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


@functools.cache
def default_lexicon() -> Lexicon:
    """The shipped lexicon, ``audio/lexicon.vi.tsv`` (loaded once per process)."""
    from radio.settings import AUDIO_ASSETS

    return Lexicon.load(AUDIO_ASSETS / "lexicon.vi.tsv")


# --- the site lexicon: shipped + the officer's local file ---------------------------------------------

def local_lexicon_path(settings: Settings) -> Path:
    """Where the officer's additions live: ``<data_dir>/lexicon.local.tsv``."""
    return Path(settings.data_dir) / LOCAL_LEXICON_NAME


@dataclass(frozen=True)
class SiteLexicon:
    """The merged lexicon plus where each entry came from (for the API and the docs)."""

    lexicon: Lexicon
    local: Lexicon
    problem: str | None  # the local file could not be read: only the shipped entries are in use

    def source(self, written: str) -> Literal["shipped", "local"]:
        return "local" if written in self.local else "shipped"


_Stamp = tuple[int, int, int] | None
_SITE_LOCK = threading.Lock()  # guards the cache
_SITE_LOCK_WRITE = threading.Lock()  # serialises edits within this process (flock across processes)
_SITE_CACHE: dict[str, tuple[_Stamp, int, SiteLexicon]] = {}


def _stamp(path: Path) -> _Stamp:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def site_lexicon_info(settings: Settings) -> SiteLexicon:
    """Shipped and local entries merged (local wins), re-read whenever the local file changes.

    A local file that cannot be read is logged and reported in ``problem``; the shipped entries are
    then used alone, so a typo in a hand edit never stops a broadcast.
    """
    path = local_lexicon_path(settings)
    stamp = _stamp(path)
    shipped = default_lexicon()
    with _SITE_LOCK:
        cached = _SITE_CACHE.get(str(path))
        if cached is not None and cached[0] == stamp and cached[1] == id(shipped):
            return cached[2]
    problem = None
    local = Lexicon()
    if stamp is not None:
        try:
            local = Lexicon.load(path)
        except FileNotFoundError:
            stamp = None
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            problem = f"từ điển phát âm riêng của đơn vị chưa được dùng cho đến khi sửa xong: {exc}"
            log.error("%s", problem)
    info = SiteLexicon(lexicon=shipped.merged(local), local=local, problem=problem)
    with _SITE_LOCK:
        _SITE_CACHE[str(path)] = (stamp, id(shipped), info)
    return info


def site_lexicon(settings: Settings) -> Lexicon:
    """The lexicon every synthesis at this site uses: shipped entries with the officer's on top."""
    return site_lexicon_info(settings).lexicon


def invalidate_lexicon_cache() -> None:
    """Forget every loaded lexicon, shipped and local (the next use reads the files again)."""
    with _SITE_LOCK:
        _SITE_CACHE.clear()
    default_lexicon.cache_clear()


@contextmanager
def _locked_local(settings: Settings) -> Iterator[Path]:
    """Serialise read-modify-write of the local file across threads and processes (CLI and server)."""
    path = local_lexicon_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _SITE_LOCK_WRITE, open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load_local_for_edit(path: Path) -> Lexicon:
    if not path.exists():
        return Lexicon()
    try:
        return Lexicon.load(path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: không phải văn bản UTF-8 ({exc}); hãy sửa hoặc xóa tệp trước khi thêm mục") from None
    except ValueError as exc:
        raise ValueError(f"{exc}; hãy sửa hoặc xóa tệp trước khi thêm mục") from None


def add_local_entry(settings: Settings, written: str, spoken: str) -> SiteLexicon:
    """Add or replace an officer entry, save the local file atomically and return the new site lexicon.

    ``ValueError`` names the field (``written``/``spoken``) for a bad entry, or the file and line when
    the existing local file is malformed (it is then left as it is).
    """
    with _locked_local(settings) as path:
        local = _load_local_for_edit(path)
        local.add(written, spoken)
        local.save(path, header=_LOCAL_HEADER)
    invalidate_site_lexicon(settings)
    return site_lexicon_info(settings)


def remove_local_entry(settings: Settings, written: str) -> SiteLexicon | None:
    """Remove an officer entry (shipped entries cannot be removed); None if there was no such entry."""
    with _locked_local(settings) as path:
        local = _load_local_for_edit(path)
        if not local.remove(written):
            return None
        local.save(path, header=_LOCAL_HEADER)
    invalidate_site_lexicon(settings)
    return site_lexicon_info(settings)


def invalidate_site_lexicon(settings: Settings) -> None:
    """Forget the cached site lexicon of ``settings`` (also done automatically when the file changes)."""
    with _SITE_LOCK:
        _SITE_CACHE.pop(str(local_lexicon_path(settings)), None)
