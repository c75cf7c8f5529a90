"""Pronunciation lexicon: written form (usually an abbreviation) → spoken Vietnamese.

The lexicon lives in a UTF-8 TSV file, one ``written<TAB>spoken`` entry per line; blank lines and lines
starting with ``#`` are ignored. Written forms that contain no lower-case letter (``UBND``, ``HĐND``,
``CT-XH``) are matched case-sensitively, so an all-caps abbreviation never swallows an ordinary word;
written forms with lower-case letters (``Đoàn TN``, ``Zalo OA``, ``VNeID``) match in any case.

:attr:`Lexicon.version` is a hash of the normalised entries, so the audio cache key changes whenever
an entry changes, whatever order the entries are listed in.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

MAX_FIELD_CHARS = 100
_FORBIDDEN_CHARS = ("\t", "\n", "\r")


def _clean(value: str, field: str) -> str:
    """Validate and normalise one field (NFC, stripped); raise ValueError naming the field."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}")
    if any(c in value for c in _FORBIDDEN_CHARS):
        raise ValueError(f"{field} must not contain tabs or line breaks: {value!r}")
    cleaned = unicodedata.normalize("NFC", value).strip()
    if not cleaned:
        raise ValueError(f"{field} must not be empty")
    if len(cleaned) > MAX_FIELD_CHARS:
        raise ValueError(f"{field} is {len(cleaned)} characters long; the maximum is {MAX_FIELD_CHARS}")
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
                raise ValueError(f"{path}:{number}: expected 'written<TAB>spoken', got {raw!r}")
            written, spoken = parts
            try:
                written_clean = _clean(written, "written")
                if written_clean in lexicon._entries:
                    raise ValueError(f"written form {written_clean!r} is listed twice")
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
            raise ValueError(f"written must not start with '#' (it would read as a comment): {written!r}")
        self._entries[written_clean] = spoken_clean
        self._version = None

    def save(self, path: Path) -> None:
        """Write the lexicon as TSV atomically (temp file in the same directory, then os.replace)."""
        path = Path(path)
        lines = ["# written<TAB>spoken (UTF-8); all-caps written forms match case-sensitively"]
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
