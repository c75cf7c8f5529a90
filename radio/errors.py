"""Exceptions raised for problems a user or an operator can fix.

    RadioError                      base: its message is shown as is (no traceback)
    ├── NotFound                    a zone, node, bulletin, slot, broadcast... that does not exist
    ├── Conflict                    the change clashes with stored data (duplicate id, overlap)
    ├── InvalidInput                bad user input; carries where it is (file, line, field)
    │   └── ScheduleFileError       a programme file that cannot be loaded
    └── ServiceUnavailable          a broker, database or engine that cannot be reached

The web layer maps them to 404 / 409 / 422 / 503 in one place; the CLI prints the message and exits 2.
"""

from __future__ import annotations


class RadioError(Exception):
    """Base class; ``str(exc)`` is a complete message for the user."""


# What each kind of thing is called in the messages officers read.
KIND_VI = {"audio": "bản thu", "bulletin": "bản tin", "slot": "khung giờ", "broadcast": "lượt phát",
           "zone": "tổ dân phố", "node": "cụm loa", "user": "người dùng", "segment": "chuyên mục",
           "group": "nhóm loa", "lexicon entry": "mục từ điển phát âm", "token": "mã truy cập", "static file": "tệp"}


class NotFound(RadioError):
    def __init__(self, kind: str, ident: object) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"không tìm thấy {KIND_VI.get(kind, kind)} «{ident}»")


class Conflict(RadioError):
    pass


class InvalidInput(RadioError):
    """Bad input; ``where`` names the place (``file:line``, a field path) when known."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where, self.detail = where, message
        super().__init__(f"{where}: {message}" if where else message)


class ScheduleFileError(InvalidInput):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ServiceUnavailable(RadioError):
    pass
