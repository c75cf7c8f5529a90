"""Programme files: YAML in, a validated pydantic tree, upserted into the database; and back out.

    parse_programme(path)            file -> Programme, or ScheduleFileError listing every problem
    load_programme(path, factory)    parse, store the audio assets, upsert in one transaction and check
                                     the programme rules (conflicts, quiet hours, caps) -> LoadReport
    export_programme(factory)        database -> YAML text that load_programme reads back

Problems name ``file:line: field.path: what is wrong``, what is wrong in Vietnamese for the ward's culture
officers (the field path keeps the file's keys). The YAML is composed (not just loaded) so the line of every
mapping key and sequence item is known; pydantic errors are mapped back to them, their texts by error type
(radio.wording, shared with the web console's forms).

Loading is all-or-nothing and idempotent. Rows are upserted by id; rows in the database that the
file does not mention are left alone. The format is documented in ``docs/schedule-format.md``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import errno
import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.db import transaction
from radio.errors import KIND_VI, ScheduleFileError
from radio.logbook import audit
from radio.models import (
    AudioAsset,
    Bulletin,
    BulletinStatus,
    ItemKind,
    Node,
    NodeGroup,
    NodeGroupMember,
    Priority,
    Segment,
    Slot,
    SlotGroupTarget,
    SlotItem,
    SlotTarget,
    Zone,
)
from radio.schedule.recurrence import WEEKDAYS
from radio.settings import Settings, load_settings
from radio.wording import PYDANTIC_VI, pydantic_vi, yaml_context_vi, yaml_problem_vi

MAX_TEXT_CHARS = 20_000  # Settings.max_bulletin_chars default
DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
SECTIONS = ("site", "zones", "groups", "segments", "assets", "bulletins", "slots")
TABLES = ("zones", "nodes", "groups", "segments", "assets", "bulletins", "slots")
MAX_DURATION_MIN = 360  # a slot's planned length and a relay: at most six hours
MAX_URL_CHARS = 2000  # SlotItem.relay_url
MAX_ASSET_BYTES = 200 * 1024 * 1024  # radio.speech.prepare.MAX_UPLOAD_BYTES
MIN_YEAR, MAX_YEAR = 2000, 2100  # dates a programme may name (from, until, dates, except)
# YAML aliases may repeat a node many times: the file's data may hold at most this many nodes once expanded
# (or ALIAS_FACTOR times the nodes written, when larger), so an "alias bomb" is refused instead of eating memory.
MAX_EXPANDED_NODES = 200_000
ALIAS_FACTOR = 10
_YAML_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp", "value",
                                                       "seq", "map")}  # what plain YAML resolves to

Loc = tuple[str | int, ...]

# --------------------------------------------------------------------------- value parsers

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TIME_RE = re.compile(r"(\d{1,2})(?::(\d{2})(?::(\d{2}))?|h(\d{2})?)")  # 06:30, 06:30:15, 6h30, 17h
_DMY_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DURATION_RE = re.compile(r"\s*(\d+(?:[.,]\d+)?)\s*(giờ|giây|phút|min|h|m|p|s)\s*")  # longest unit first
_DURATION_UNITS = {"h": 3600, "giờ": 3600, "m": 60, "min": 60, "p": 60, "phút": 60, "s": 1, "giây": 1}

_WEEKDAY_ALIASES: dict[str, str] = {
    **{day: day for day in WEEKDAYS},
    **{
        name: day
        for name, day in zip(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
            WEEKDAYS,
            strict=True,
        )
    },
    **{f"t{n}": day for n, day in zip(range(2, 8), WEEKDAYS, strict=False)},
    **{f"thứ {n}": day for n, day in zip(range(2, 8), WEEKDAYS, strict=False)},
    "cn": "sun",
    "chủ nhật": "sun",
}
_DAILY = {"daily", "hằng ngày", "hàng ngày"}
_ALL_ZONES = {"all", "toàn phường"}
_PRIORITY_ALIASES: dict[str, Priority] = {
    "normal": Priority.NORMAL,
    "thông thường": Priority.NORMAL,
    "priority": Priority.PRIORITY,
    "ưu tiên": Priority.PRIORITY,
    "emergency": Priority.EMERGENCY,
    "khẩn cấp": Priority.EMERGENCY,
}


# --------------------------------------------------------------------------- messages in Vietnamese

def _number(value: int) -> str:
    """20055 -> "20.055" (Vietnamese thousands separator)."""
    return f"{value:,}".replace(",", ".")


# What each section's items are called in messages (radio.errors.KIND_VI, plus the file's own words).
_KIND_VI = {**KIND_VI, "audio asset": "tệp âm thanh", "slot": "khung giờ"}
TABLES_VI = {"zones": "tổ dân phố", "nodes": "cụm loa", "groups": "nhóm loa", "segments": "chuyên mục",
             "assets": "tệp âm thanh", "bulletins": "bản tin", "slots": "khung giờ"}


def _kind(kind: str) -> str:
    return _KIND_VI.get(kind, kind)


def _os_error(exc: OSError) -> str:
    """An OSError in Vietnamese for the common cases (the system's own words otherwise)."""
    known = {
        errno.ENOENT: "không có tệp này", errno.EACCES: "không có quyền đọc", errno.EPERM: "không có quyền đọc",
        errno.EISDIR: "đây là thư mục, không phải tệp", errno.ENOTDIR: "đường dẫn sai (có phần không phải thư mục)",
        errno.ENAMETOOLONG: "tên tệp quá dài", errno.ELOOP: "liên kết vòng quanh",
    }
    return known.get(exc.errno or 0) or str(exc.strerror or exc)


def _show(value: object) -> str:
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(value: object) -> str:
    """Alias lookup key: NFC (editors differ in how they compose Vietnamese), trimmed, lower case."""
    return " ".join(unicodedata.normalize("NFC", str(value)).split()).casefold()


def _parse_id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise PydanticCustomError(
            "id",
            "mã {value} không hợp lệ (1–64 ký tự: chữ không dấu, chữ số, '-', '_' hoặc '.', ví dụ tdp-1)",
            {"value": _show(value)},
        )
    return value


def _parse_time(value: object) -> dt.time:
    if isinstance(value, dt.time):
        return value
    match = _TIME_RE.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match:
        hour, minute, second, h_minute = (int(part or 0) for part in match.groups())
        minute = minute or h_minute
        if hour < 24 and minute < 60 and second < 60:
            return dt.time(hour, minute, second)
    raise PydanticCustomError(
        "time", "giờ {value} không hợp lệ (dạng HH:MM, ví dụ 06:30)", {"value": _show(value)}
    )


def _parse_date(value: object) -> dt.date:
    day: dt.date | None = None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        day = value
    elif isinstance(value, str):
        try:
            if match := _DMY_RE.fullmatch(value.strip()):  # 30/9/2024, as written in ward documents
                d, month, year = (int(part) for part in match.groups())
                day = dt.date(year, month, d)
            else:
                day = dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    if day is None:
        raise PydanticCustomError(
            "date", "ngày {value} không hợp lệ (dạng YYYY-MM-DD hoặc DD/MM/YYYY)", {"value": _show(value)}
        )
    if not MIN_YEAR <= day.year <= MAX_YEAR:  # e.g. except: [31/12/9999]: nothing to schedule that far
        raise PydanticCustomError(
            "date_range",
            "ngày {value} nằm ngoài khoảng năm {low}–{high}",
            {"value": _show(value if isinstance(value, str) else day.isoformat()), "low": MIN_YEAR,
             "high": MAX_YEAR},
        )
    return day


def _parse_days(value: object) -> Literal["daily"] | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) and _key(value) in _DAILY:
        return "daily"
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise PydanticCustomError(
            "days", "ghi daily (hằng ngày) hoặc danh sách các thứ, ví dụ [t2, t4, t6] hay [mon, wed, fri]"
        )
    days = set()
    for item in items:
        day = _WEEKDAY_ALIASES.get(_key(item))
        if day is None:
            raise PydanticCustomError(
                "weekday",
                "{value} không phải là thứ trong tuần (dùng t2…t7, cn hoặc mon, tue, wed, thu, fri, sat, sun)",
                {"value": _show(item)},
            )
        days.add(day)
    return tuple(day for day in WEEKDAYS if day in days)


def _parse_priority(value: object) -> str:
    priority = _PRIORITY_ALIASES.get(_key(value)) if isinstance(value, str) else None
    if priority is None:
        raise PydanticCustomError(
            "priority",
            "{value} không phải là mức ưu tiên (dùng thông thường, ưu tiên, khẩn cấp; hoặc normal, priority, "
            "emergency)",
            {"value": _show(value)},
        )
    return priority.value


def _parse_zones(value: object) -> Literal["all"] | tuple[str, ...]:
    if isinstance(value, str) and _key(value) in _ALL_ZONES:
        return "all"
    if not isinstance(value, list) or not value:
        raise PydanticCustomError(
            "zones", "ghi all (toàn phường) hoặc danh sách mã tổ dân phố, ví dụ [tdp-1, tdp-2]"
        )
    return tuple(sorted({_parse_id(item) for item in value}))


def _parse_groups(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PydanticCustomError("groups", "ghi danh sách mã nhóm loa, ví dụ [loa-khu-cho]")
    return tuple(sorted({_parse_id(item) for item in value}))


def _parse_nodes(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PydanticCustomError("nodes", "cần ít nhất một mã cụm loa, ví dụ [loa-tdp1-a, loa-tdp3-b]")
    return tuple(sorted({_parse_id(item) for item in value}))


def _parse_duration(value: object) -> float | None:
    """Seconds from ``15`` (minutes), ``"15m"``, ``"90s"``, ``"1h30m"``, ``"15 phút"``, ``"90 giây"``."""
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) * 60
    elif isinstance(value, str) and value.strip():
        text = _key(value)
        parts = list(_DURATION_RE.finditer(text))
        if parts and "".join(part.group(0) for part in parts) == text:
            seconds = sum(float(p.group(1).replace(",", ".")) * _DURATION_UNITS[p.group(2)] for p in parts)
    if seconds is None:
        raise PydanticCustomError(
            "duration",
            '{value} không phải là thời lượng (ghi ví dụ "15m", "90s", "1h30m", "15 phút", hoặc một số phút)',
            {"value": _show(value)},
        )
    if not 0 < seconds <= MAX_DURATION_MIN * 60:
        raise PydanticCustomError(
            "duration_range",
            "thời lượng {value} phải lớn hơn 0 và không quá {limit} phút",
            {"value": _show(value), "limit": MAX_DURATION_MIN},
        )
    return seconds


def _parse_url(value: object) -> str:
    text = value.strip() if isinstance(value, str) else ""
    try:
        parts = urlsplit(text)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or len(text) > MAX_URL_CHARS or any(ch.isspace() for ch in text):
        raise PydanticCustomError(
            "url",
            "{value} không phải là địa chỉ luồng http:// hoặc https:// (ví dụ http://radio.example.vn/live)",
            {"value": _show(value)},
        )
    return text


def _parse_sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise PydanticCustomError("sha256", "sha256 phải gồm 64 ký tự hệ 16 viết thường (0–9, a–f)")
    return value


def _parse_timezone(value: object) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone", "{value} không phải là múi giờ hợp lệ (ví dụ Asia/Ho_Chi_Minh)", {"value": _show(value)}
        ) from None
    return str(value)


def _parse_dates(value: object) -> list[dt.date]:
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    return sorted({_parse_date(item) for item in value})


Id = Annotated[str, BeforeValidator(_parse_id)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
WallTime = Annotated[dt.time, BeforeValidator(_parse_time)]
Date = Annotated[dt.date, BeforeValidator(_parse_date)]
Dates = Annotated[list[dt.date], BeforeValidator(_parse_dates)]
Days = Annotated[Literal["daily"] | tuple[str, ...] | None, BeforeValidator(_parse_days)]
Targets = Annotated[Literal["all"] | tuple[str, ...], BeforeValidator(_parse_zones)]
GroupIds = Annotated[tuple[str, ...], BeforeValidator(_parse_groups)]
NodeIds = Annotated[tuple[str, ...], BeforeValidator(_parse_nodes)]
Duration = Annotated[float | None, BeforeValidator(_parse_duration)]
StreamUrl = Annotated[str, BeforeValidator(_parse_url)]
Sha256 = Annotated[str, BeforeValidator(_parse_sha256)]
PriorityName = Annotated[str, BeforeValidator(_parse_priority)]
TimeZoneName = Annotated[str, BeforeValidator(_parse_timezone)]

# --------------------------------------------------------------------------- the file's model


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=False)


class SiteSpec(Spec):
    """Informational: the zone itself comes from the server's settings (RADIO_TIMEZONE)."""

    name: Name
    timezone: TimeZoneName = DEFAULT_TIMEZONE


class NodeSpec(Spec):
    id: Id
    name: Name


class ZoneSpec(Spec):
    id: Id
    name: Name
    nodes: list[NodeSpec] = []


class SegmentSpec(Spec):
    id: Id
    name: Name


class GroupSpec(Spec):
    """A named group of loudspeaker clusters, possibly from several zones."""

    id: Id
    name: Name
    nodes: NodeIds


class AssetSpec(Spec):
    """An audio file (jingle, recorded announcement): ``file`` next to the YAML, or ``sha256`` already stored."""

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=300)]
    file: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    sha256: Sha256 | None = None


class AudioItemSpec(Spec):
    """``{audio: <asset id>}`` in a playlist."""

    audio: Id


class RelayItemSpec(Spec):
    """``{relay: <URL>, minutes: N}`` (or ``seconds: N``): relay a live stream for a set time."""

    relay: StreamUrl
    minutes: Annotated[float, Field(gt=0, le=MAX_DURATION_MIN)] | None = None
    seconds: Annotated[float, Field(gt=0, le=MAX_DURATION_MIN * 60)] | None = None

    @model_validator(mode="after")
    def _one_length(self) -> RelayItemSpec:
        if (self.minutes is None) == (self.seconds is None):
            raise PydanticCustomError(
                "relay_length", "ghi thời gian tiếp âm: minutes: N hoặc seconds: N (chỉ một trong hai)"
            )
        return self

    @property
    def relay_s(self) -> float:
        return self.seconds if self.seconds is not None else (self.minutes or 0.0) * 60


def _play_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "@relay" if "relay" in value else ("@audio" if "audio" in value else None)
    if isinstance(value, RelayItemSpec | AudioItemSpec):
        return "@relay" if isinstance(value, RelayItemSpec) else "@audio"
    return "@bulletin"


# Tags start with "@": they are dropped from error locations (see _report).
PlayItem = Annotated[
    Union[  # noqa: UP007  (the | form does not take Annotated members on every supported Python)
        Annotated[Id, Tag("@bulletin")],
        Annotated[AudioItemSpec, Tag("@audio")],
        Annotated[RelayItemSpec, Tag("@relay")],
    ],
    Discriminator(
        _play_kind,
        custom_error_type="play_item",
        custom_error_message="ghi mã bản tin, tệp âm thanh dạng audio: <mã>, hoặc tiếp âm dạng relay: <URL> "
        "kèm minutes: <N>",
    ),
]


class BulletinSpec(Spec):
    id: Id
    title: Annotated[str, Field(min_length=1, max_length=300)]
    segment: Id | None = None
    text: str | None = None
    audio: str | None = None  # sha256 of an uploaded recording, instead of (or besides) text
    approved: bool | None = None  # true: approve; false: back to draft; absent: see docs
    engine: Literal["espeak", "gtts"] | None = None
    voice: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    rate: Annotated[int, Field(ge=80, le=400)] | None = None

    @field_validator("text")
    @classmethod
    def _text_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        limit = (info.context or {}).get("max_text_chars", MAX_TEXT_CHARS)
        if not value:  # already stripped (str_strip_whitespace)
            raise PydanticCustomError("text_empty", "nội dung bản tin trống")
        if len(value) > limit:
            raise PydanticCustomError(
                "text_long",
                "nội dung dài {length} ký tự; tối đa {limit} ký tự",
                {"length": _number(len(value)), "limit": _number(limit)},
            )
        return value

    @field_validator("audio")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_RE.fullmatch(value):
            raise PydanticCustomError(
                "audio", "audio phải là mã sha256 (64 ký tự hệ 16 viết thường) của một bản ghi âm"
            )
        return value


class SlotSpec(Spec):
    id: Id
    name: Annotated[str, Field(min_length=1, max_length=300)]
    segment: Id | None = None
    time: WallTime
    days: Days = None
    every_weeks: Annotated[int, Field(ge=1, le=52)] = 1
    valid_from: Date | None = Field(default=None, alias="from")
    valid_until: Date | None = Field(default=None, alias="until")
    dates: Dates = []
    exclude: Dates = Field(default=[], alias="except")
    holidays: Literal["keep", "skip"] = "keep"
    priority: PriorityName = Priority.NORMAL.value
    zones: Targets | None = None
    groups: GroupIds | None = None
    duration: Duration = None  # planned length in seconds; None: estimated from the playlist
    play: Annotated[list[PlayItem], Field(min_length=1)]
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> SlotSpec:
        """Checks across fields, shared by the programme file and the slots API (each names its field)."""
        problems = slot_rule_problems(
            valid_from=self.valid_from, valid_until=self.valid_until, has_days=self.days is not None,
            has_dates=bool(self.dates), zones=self.zones, has_groups=bool(self.groups),
        )
        if problems:
            field_name, detail, missing = problems[0]
            raise PydanticCustomError("slot_rule", "{field}: {detail}",
                                      {"field": field_name, "detail": detail, "missing": missing})
        return self

    @property
    def weekdays_column(self) -> str:
        """Slot.weekdays: "" is every day (only when there are no one-off dates), else day names."""
        if self.days is None or (self.days == "daily" and not self.dates):
            return ""
        return ",".join(WEEKDAYS if self.days == "daily" else self.days)


def slot_rule_problems(
    *, valid_from: dt.date | None, valid_until: dt.date | None, has_days: bool, has_dates: bool, zones: object,
    has_groups: bool,
) -> list[tuple[str, str, bool]]:
    """A slot's problems across fields, as (field, what is wrong, whether the field is missing).

    SlotSpec raises the first as a ``slot_rule`` error whose message starts with the field (the slots API shows
    it as is); the file loader reports each at the field's line, or the slot's when the field is missing.
    (A slot with neither zones nor groups is refused by each path in its own words: ``_check_slot`` and
    ``radio.web.slots_api._check_refs``.)
    """
    out: list[tuple[str, str, bool]] = []
    if valid_from and valid_until and valid_from > valid_until:
        out.append(("until", f"{valid_until.isoformat()} trước ngày bắt đầu (from: {valid_from.isoformat()})",
                    False))
    if not has_days and not has_dates:
        out.append(("days", "ghi days (daily hoặc danh sách các thứ) hoặc dates (các ngày phát lẻ), hoặc cả hai",
                    True))
    if zones == "all" and has_groups:
        out.append(("groups", "zones: all đã gồm mọi cụm loa của phường; bỏ groups, hoặc liệt kê từng tổ dân phố",
                    False))
    return out


class Programme(BaseModel):
    """A whole programme file, validated and cross-checked."""

    site: SiteSpec | None = None
    zones: list[ZoneSpec] = []
    groups: list[GroupSpec] = []
    segments: list[SegmentSpec] = []
    assets: list[AssetSpec] = []
    bulletins: list[BulletinSpec] = []
    slots: list[SlotSpec] = []


_SPECS: dict[str, type[Spec]] = {
    "zones": ZoneSpec,
    "groups": GroupSpec,
    "segments": SegmentSpec,
    "assets": AssetSpec,
    "bulletins": BulletinSpec,
    "slots": SlotSpec,
}
_FIELD_NAMES = sorted(
    {
        info.alias or name
        for spec in (
            SiteSpec, NodeSpec, ZoneSpec, GroupSpec, SegmentSpec, AssetSpec, BulletinSpec, SlotSpec,
            AudioItemSpec, RelayItemSpec,
        )
        for name, info in spec.model_fields.items()
    }
)

# --------------------------------------------------------------------------- YAML with line numbers


class _Source:
    """The composed file: plain Python data plus the line of every key and item, by field path."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.lines: dict[Loc, int] = {(): 1}
        self._problems: list[tuple[int, str]] = []
        self.expanded = 0  # YAML nodes turned into Python values so far, aliases counted each time
        self.budget = MAX_EXPANDED_NODES

    @property
    def problems(self) -> list[str]:
        """Every problem found, in file order."""
        return [message for _, message in sorted(self._problems, key=lambda problem: problem[0])]

    def line(self, loc: Loc) -> int:
        """The line of the deepest part of ``loc`` present in the file (a missing key: its parent)."""
        while loc not in self.lines:
            loc = loc[:-1]
        return self.lines[loc]

    def file_problem(self, message: str) -> None:
        self._problems.append((0, f"{self.name}: {message}"))

    def problem(self, loc: Loc, message: str, *, line: int | None = None) -> None:
        line = line or self.line(loc)
        where = f"{self.name}:{line}"
        problem = (line, f"{where}: {_dotted(loc)}: {message}" if loc else f"{where}: {message}")
        if problem not in self._problems:  # e.g. a cross-field check reached by two paths
            self._problems.append(problem)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _read_yaml(path: Path, source: _Source) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        source.problem((), f"tệp không phải văn bản UTF-8 (byte lỗi ở vị trí {exc.start}); hãy lưu lại tệp với "
                           "bảng mã UTF-8")
        return None
    except OSError as exc:
        source.file_problem(f"không đọc được tệp: {_os_error(exc)}")
        return None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        detail = yaml_problem_vi(str(exc.problem or ""))
        if exc.context:  # e.g. "while scanning a quoted scalar" that began earlier
            context = yaml_context_vi(exc.context, exc.context_mark.line + 1 if exc.context_mark else None)
            detail = f"{context}: {detail}" if context else detail
        source.problem((), f"lỗi cú pháp YAML: {detail}", line=line)
        return None
    except yaml.YAMLError as exc:
        source.problem((), f"lỗi cú pháp YAML: {exc}")
        return None
    if node is None:
        source.problem((), "tệp trống")
        return None
    try:
        source.budget = max(MAX_EXPANDED_NODES, ALIAS_FACTOR * _written_nodes(node))
        return _to_python(node, (), source, loader, frozenset())
    except _TooManyNodes:
        source.problem((), f"tệp YAML bung ra hơn {_number(source.budget)} giá trị qua các alias (*tên), có thể là "
                           "một \"bom alias\": hãy viết thẳng các giá trị thay vì lặp lại alias")
        return None
    finally:
        loader.dispose()


# PyYAML's messages, in Vietnamese: what it was reading ("context") and what is wrong ("problem").
class _TooManyNodes(Exception):
    """Aliases expanded the document past its budget (see MAX_EXPANDED_NODES)."""


def _written_nodes(root: yaml.Node) -> int:
    """How many distinct nodes the file spells out (an alias repeats a node without adding one)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return len(seen)


def _to_python(
    node: yaml.Node, loc: Loc, source: _Source, loader: yaml.SafeLoader, seen: frozenset[int]
) -> Any:
    if id(node) in seen:
        source.problem(loc, "alias YAML tự lặp vào chính nó")
        return None
    source.expanded += 1
    if source.expanded > source.budget:
        raise _TooManyNodes
    if node.tag not in _YAML_TAGS:  # !!python/object, !!binary, !custom: never constructed
        _bad_tag(node, loc, source)
        return None
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, loc, source, loader, seen)
    if isinstance(node, yaml.SequenceNode):
        out = []
        for index, item in enumerate(node.value):
            source.lines[(*loc, index)] = item.start_mark.line + 1
            out.append(_to_python(item, (*loc, index), source, loader, seen))
        return out
    return _scalar(node, loader)


def _bad_tag(node: yaml.Node, loc: Loc, source: _Source) -> None:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    source.problem(loc, f"không được dùng thẻ YAML {tag} (chỉ viết giá trị, danh sách và khoá: giá trị thông thường)",
                   line=node.start_mark.line + 1)


def _mapping(
    node: yaml.MappingNode, loc: Loc, source: _Source, loader: yaml.SafeLoader, seen: frozenset[int]
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    first_line: dict[Any, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            source.problem(loc, "chỉ dùng khoá thông thường (không dùng '<<' hay khoá phức hợp)", line=line)
            continue
        if key_node.tag not in _YAML_TAGS:
            _bad_tag(key_node, loc, source)
            continue
        key = _scalar(key_node, loader)
        if key in first_line:
            source.problem((*loc, key), f"khoá bị lặp (đã có ở dòng {first_line[key]})", line=line)
            continue
        first_line[key] = line
        source.lines[(*loc, key)] = line
        out[key] = _to_python(value_node, (*loc, key), source, loader, seen)
    return out


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    # YAML 1.1 reads 17:00 as the base-60 integer 1020: keep such scalars as the text written.
    if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in str(node.value):
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError):
        return node.value  # e.g. 2024-13-01: let the field validator report it with its line


# --------------------------------------------------------------------------- validation

_S = TypeVar("_S", bound=Spec)


def parse_programme(
    path: Path, *, timezone: str | None = None, max_text_chars: int = MAX_TEXT_CHARS
) -> Programme:
    """Read and fully check a programme file; raise ScheduleFileError listing every problem found.

    ``timezone``, when given (the server's RADIO_TIMEZONE), must match the file's site.timezone.
    What needs the server is checked by :func:`load_programme` only: the content of asset files,
    ``{audio: id}`` references to assets already in the database, and the programme rules.
    """
    return _parse(Path(path), timezone=timezone, max_text_chars=max_text_chars).programme


@dataclass
class _Parsed:
    programme: Programme
    source: _Source
    index: dict[tuple[str, str], int]  # (section, id) -> position in the file, for problem lines


def _parse(path: Path, *, timezone: str | None, max_text_chars: int) -> _Parsed:
    source = _Source(path)
    data = _read_yaml(path, source)
    if source.problems:
        raise ScheduleFileError(source.problems)
    context = {"max_text_chars": max_text_chars}
    sections = _sections(data, source)
    site = _validate_one(sections.get("site"), ("site",), SiteSpec, source, context)
    items = {
        name: _validate_items(sections.get(name), name, spec, source, context)
        for name, spec in _SPECS.items()
    }
    programme = Programme(
        site=site,
        zones=_valid(items["zones"], ZoneSpec),
        groups=_valid(items["groups"], GroupSpec),
        segments=_valid(items["segments"], SegmentSpec),
        assets=_valid(items["assets"], AssetSpec),
        bulletins=_valid(items["bulletins"], BulletinSpec),
        slots=_valid(items["slots"], SlotSpec),
    )
    _cross_check(items, source, path.parent)
    if site and timezone and site.timezone != timezone:
        source.problem(
            ("site", "timezone"), f'"{site.timezone}" khác múi giờ của máy chủ "{timezone}"'
        )
    if source.problems:
        raise ScheduleFileError(source.problems)
    index = {
        (name, str(getattr(spec, "id"))): position  # noqa: B009  (every item spec has an id)
        for name, pairs in items.items()
        for position, (_, spec) in enumerate(pairs)
        if spec is not None
    }
    return _Parsed(programme, source, index)


def _valid(pairs: list[tuple[Any, Spec | None]], spec: type[_S]) -> list[_S]:
    return [item for _, item in pairs if isinstance(item, spec)]


def _sections(data: Any, source: _Source) -> dict[str, Any]:
    if not isinstance(data, dict):
        source.problem((), f"cấp ngoài cùng phải gồm các phần dạng khoá: giá trị ({', '.join(SECTIONS)})")
        return {}
    for key in data:
        if key not in SECTIONS:
            source.problem(
                (key,), f"không có phần này{_suggest(key, SECTIONS)}; các phần hợp lệ: {', '.join(SECTIONS)}"
            )
    return {key: value for key, value in data.items() if key in SECTIONS}


def _validate_items(
    raw: Any, section: str, spec: type[_S], source: _Source, context: dict[str, Any]
) -> list[tuple[Any, _S | None]]:
    """Validate each item on its own, so one bad item does not hide the others' problems."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        source.problem((section,), "phải là danh sách (mỗi mục bắt đầu bằng '- ')")
        return []
    return [
        (item, _validate_one(item, (section, index), spec, source, context)) for index, item in enumerate(raw)
    ]


def _validate_one(raw: Any, loc: Loc, spec: type[_S], source: _Source, context: dict[str, Any]) -> _S | None:
    if raw is None and loc == ("site",):
        return None
    try:
        return spec.model_validate(raw, context=context)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            _report(source, (*loc, *error["loc"]), error)
        return None


def _report(source: _Source, loc: Loc, error: Any) -> None:
    loc = tuple(part for part in loc if not (isinstance(part, str) and part.startswith("@")))  # union tags
    kind, message = error["type"], error["msg"]
    if kind == "slot_rule":  # a cross-field check of SlotSpec: at the line of the field it names
        ctx = error["ctx"]
        loc, message = (loc if ctx.get("missing") else (*loc, ctx["field"])), ctx["detail"]
    elif kind == "extra_forbidden":
        message = f"{PYDANTIC_VI[kind]}{_suggest(str(loc[-1]), _FIELD_NAMES)}"
    elif kind == "too_short" and loc[-1] == "play":
        message = "cần ít nhất một mục (mã bản tin, audio: hoặc relay:), ví dụ [dvc-truc-tuyen]"
    elif kind in ("missing", "model_type", "model_attributes_type", "string_too_short"):
        message = pydantic_vi(error)
    elif kind not in _CUSTOM_ERRORS:  # pydantic's own words, in Vietnamese, and what the file says
        message = f"{pydantic_vi(error)} (đang ghi {_show(error['input'])})"
    source.problem(loc, message)


_CUSTOM_ERRORS = {
    "id",
    "time",
    "date",
    "date_range",
    "days",
    "weekday",
    "priority",
    "zones",
    "timezone",
    "text_empty",
    "text_long",
    "audio",
    "groups",
    "nodes",
    "duration",
    "duration_range",
    "url",
    "sha256",
    "relay_length",
    "play_item",
}


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (có phải ý bạn là {close[0]}?)" if close else ""


# --------------------------------------------------------------------------- cross-reference checks


@dataclass
class _Known:
    """The ids each section of the file defines."""

    zones: set[str]
    nodes: set[str]
    groups: set[str]
    segments: set[str]
    assets: set[str]
    bulletins: set[str]


def _cross_check(items: dict[str, list[tuple[Any, Any]]], source: _Source, base: Path) -> None:
    """Duplicate ids, nodes in two zones, unknown references, impossible validity ranges, missing files.

    Runs on the raw items, so an item with a bad field still gets its references checked.
    """
    known = _Known(
        zones=_ids("zones", items["zones"], "zone", source),
        nodes=_check_nodes([raw for raw, _ in items["zones"]], source),
        groups=_ids("groups", items["groups"], "group", source),
        segments=_ids("segments", items["segments"], "segment", source),
        assets=_ids("assets", items["assets"], "audio asset", source),
        bulletins=_ids("bulletins", items["bulletins"], "bulletin", source),
    )
    _ids("slots", items["slots"], "slot", source)
    for index, (raw, _) in enumerate(items["groups"]):
        if isinstance(raw, dict) and isinstance(raw.get("nodes"), list):
            for n_index, node in enumerate(raw["nodes"]):
                _check_ref(node, ("groups", index, "nodes", n_index), "node", known.nodes, source)
    for index, (raw, _) in enumerate(items["assets"]):
        if isinstance(raw, dict):
            _check_asset(raw, ("assets", index), base, source)
    for index, (raw, _) in enumerate(items["bulletins"]):
        if isinstance(raw, dict):
            _check_bulletin(raw, ("bulletins", index), known.segments, source)
    for index, (raw, spec) in enumerate(items["slots"]):
        if isinstance(raw, dict):
            _check_slot(raw, ("slots", index), known, source, valid=spec is not None)


def _ident(value: Any) -> str | None:
    """An id as written, or None when it is not even a scalar (already reported)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def _ids(section: str, items: list[tuple[Any, Any]], kind: str, source: _Source) -> set[str]:
    """All ids of a section (invalid items included: they are already reported); flags duplicates."""
    first: dict[str, int] = {}
    for index, (raw, _) in enumerate(items):
        ident = _ident(raw.get("id")) if isinstance(raw, dict) else None
        if ident is None:
            continue
        loc: Loc = (section, index, "id")
        if ident in first:
            source.problem(loc, f'mã {_kind(kind)} "{ident}" bị trùng (đã có ở dòng {first[ident]})')
        else:
            first[ident] = source.line(loc)
    return set(first)


def _check_nodes(zones: list[Any], source: _Source) -> set[str]:
    """Node ids are unique across the ward; returns them all."""
    owner: dict[str, tuple[str | None, int]] = {}
    for z_index, zone in enumerate(zones):
        nodes = zone.get("nodes") if isinstance(zone, dict) else None
        if not isinstance(nodes, list):
            continue
        zone_id = _ident(zone.get("id"))
        for n_index, node in enumerate(nodes):
            node_id = _ident(node.get("id")) if isinstance(node, dict) else None
            if node_id is None:
                continue
            loc: Loc = ("zones", z_index, "nodes", n_index, "id")
            if node_id not in owner:
                owner[node_id] = (zone_id, source.line(loc))
                continue
            other_zone, line = owner[node_id]
            if other_zone == zone_id:
                source.problem(loc, f'mã cụm loa "{node_id}" bị trùng (đã có ở dòng {line})')
            else:
                source.problem(
                    loc,
                    f'cụm loa "{node_id}" đã thuộc tổ dân phố "{other_zone}" (dòng {line}); '
                    "mỗi cụm loa chỉ thuộc một tổ dân phố",
                )
    return set(owner)


def _check_asset(raw: dict[Any, Any], loc: Loc, base: Path, source: _Source) -> None:
    file, sha256 = raw.get("file"), raw.get("sha256")
    if file is None and sha256 is None:
        source.problem(
            loc, "ghi file: (tệp âm thanh, đường dẫn tính từ tệp này) hoặc sha256: (bản thu đã có trong kho)"
        )
    elif file is not None and sha256 is not None:
        source.problem((*loc, "sha256"), "chỉ ghi file: hoặc sha256:, không ghi cả hai")
    elif isinstance(file, str) and file.strip():
        path = base / file.strip()
        try:
            size = path.stat().st_size
        except OSError as exc:
            source.problem((*loc, "file"), f'không đọc được "{file}": {_os_error(exc)}')
            return
        if not path.is_file():
            source.problem((*loc, "file"), f'"{file}" không phải là tệp')
        elif size > MAX_ASSET_BYTES:
            source.problem(
                (*loc, "file"), f'"{file}" nặng {size / 2**20:.0f} MiB; tối đa {MAX_ASSET_BYTES // 2**20} MiB'
            )


def _check_bulletin(raw: dict[Any, Any], loc: Loc, segments: set[str], source: _Source) -> None:
    _check_ref(raw.get("segment"), (*loc, "segment"), "segment", segments, source)
    if raw.get("text") is None and raw.get("audio") is None:
        source.problem((*loc, "text"), "thiếu trường bắt buộc (bản tin cần có text hoặc audio)")


def _check_slot(raw: dict[Any, Any], loc: Loc, known: _Known, source: _Source, *, valid: bool = True) -> None:
    _check_ref(raw.get("segment"), (*loc, "segment"), "segment", known.segments, source)
    zones, groups = raw.get("zones"), raw.get("groups")
    if isinstance(zones, list):
        for index, zone in enumerate(zones):
            _check_ref(zone, (*loc, "zones", index), "zone", known.zones, source)
    if isinstance(groups, list):
        for index, group in enumerate(groups):
            _check_ref(group, (*loc, "groups", index), "group", known.groups, source)
    if zones is None and groups is None:  # the slots API says it in its own words (slots_api._check_refs)
        source.problem(
            loc, "hãy chọn zones hoặc groups: zones (danh sách mã tổ dân phố, hoặc all cho toàn phường), groups "
                 "(danh sách mã nhóm loa), hoặc cả hai"
        )
    if not valid:
        # SlotSpec._consistent checks across fields, but only once every field is valid: run the same checks on
        # what can be read, so they are listed with the slot's other problems (repeats are dropped).
        for field_name, detail, missing in slot_rule_problems(
            valid_from=_try_date(raw.get("from")), valid_until=_try_date(raw.get("until")),
            has_days=raw.get("days") is not None, has_dates=bool(raw.get("dates")),
            zones="all" if isinstance(zones, str) and _key(zones) in _ALL_ZONES else zones,
            has_groups=bool(groups),
        ):
            source.problem(loc if missing else (*loc, field_name), detail)
    if isinstance(raw.get("play"), list):
        for index, item in enumerate(raw["play"]):
            if not isinstance(item, dict):
                _check_ref(item, (*loc, "play", index), "bulletin", known.bulletins, source)
            # {audio: id} may also name an asset already in the database: checked by load_programme.


def _try_date(value: Any) -> dt.date | None:
    try:
        return _parse_date(value) if value is not None else None
    except PydanticCustomError:
        return None  # reported by the field validator


def _check_ref(value: Any, loc: Loc, kind: str, known: set[str], source: _Source) -> None:
    ident = _ident(value)
    if ident is not None and ident not in known:
        source.problem(loc, _unknown(kind, ident, known))


def _unknown(kind: str, ident: str, known: set[str]) -> str:
    return f'không tìm thấy {_kind(kind)} "{ident}"{_suggest(ident, sorted(known))}'


# --------------------------------------------------------------------------- writing


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, other: Counts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged


@dataclass
class LoadReport:
    """What a load did, per table; ``back_to_draft`` lists bulletins that now need approval again."""

    path: str
    counts: dict[str, Counts] = field(default_factory=lambda: {table: Counts() for table in TABLES})
    back_to_draft: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.created or c.updated for c in self.counts.values())

    def __str__(self) -> str:
        """One line, e.g. ``tổ dân phố: tạo 6, sửa 0, giữ nguyên 0; cụm loa: ...``."""
        parts = [
            f"{TABLES_VI.get(t, t)}: tạo {c.created}, sửa {c.updated}, giữ nguyên {c.unchanged}"
            for t, c in self.counts.items()
        ]
        if self.back_to_draft:
            parts.append(f"trở lại bản nháp, chờ duyệt lại (nội dung đã đổi): {', '.join(self.back_to_draft)}")
        return "; ".join(parts)


def load_programme(
    path: Path,
    factory: sessionmaker[Session],
    *,
    timezone: str | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
    settings: Settings | None = None,
    actor: str = "cli",
) -> LoadReport:
    """Validate the whole file, store its audio assets, then upsert it in one transaction.

    Every slot and bulletin the load creates or changes gets its own audit entry, as the web console's changes
    do (``slot.created``/``slot.updated``, ``bulletin.created``/``bulletin.updated``/``bulletin.approved``, with
    the state before and after), and a load that changes anything appends one ``programme.loaded`` entry (counts,
    the file's sha256), all in the load's transaction: a refused load leaves none of them.

    Nothing is written to the database on any problem: file problems, asset files that are not
    audio, ``{audio: id}`` naming no asset, or programme rules broken by one of the file's slots
    (checked on the state the load would produce). Assets are stored in the audio store before the
    transaction; a refused load can leave unreferenced, content-addressed blobs behind (harmless).
    ``settings`` (default: :func:`radio.settings.load_settings`) gives the audio store, time zone
    and rule limits.
    """
    path = Path(path)
    parsed = _parse(path, timezone=timezone, max_text_chars=max_text_chars)
    settings = settings or load_settings()
    stored = _store_assets(parsed, path.parent, settings)
    report = LoadReport(path=str(path))
    with transaction(factory) as session:
        _check_asset_refs(session, parsed)
        _write(session, parsed.programme, report, stored, settings, actor)
        _check_rules(session, parsed, settings)
        if report.changed:
            audit.record(session, actor=actor, action=audit.PROGRAMME_LOADED, entity_type="programme",
                         entity_id=path.name, before=None, after={
                             "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                             "counts": {t: vars(c) for t, c in report.counts.items()},
                             "back_to_draft": report.back_to_draft})
    return report


def _store_assets(parsed: _Parsed, base: Path, settings: Settings) -> dict[str, tuple[str, float | None]]:
    """Put each asset's audio in the store; id -> (sha256, duration or None when already stored)."""
    from radio.sound.store import AudioStore
    from radio.speech.prepare import prepare_uploaded

    store = AudioStore(settings.audio_dir)
    stored: dict[str, tuple[str, float | None]] = {}
    source = parsed.source
    for spec in parsed.programme.assets:
        loc: Loc = ("assets", parsed.index[("assets", spec.id)])
        if spec.sha256 is not None:
            if store.exists(spec.sha256):
                stored[spec.id] = (spec.sha256, None)
            else:
                source.problem(
                    (*loc, "sha256"), "kho âm thanh không có bản thu nào có sha256 này (hãy ghi file: thay vào)"
                )
            continue
        assert spec.file is not None  # one of the two: checked by _check_asset
        try:
            data = (base / spec.file).read_bytes()
            audio = prepare_uploaded(data, settings, store)
        except OSError as exc:
            source.problem((*loc, "file"), f'không đọc được "{spec.file}": {_os_error(exc)}')
        except ValueError as exc:  # AudioDecodeError: not audio; or empty
            source.problem((*loc, "file"), f'"{spec.file}" không dùng được làm âm thanh: {exc}')
        else:
            stored[spec.id] = (audio.sha256, audio.duration_s)
    if source.problems:
        raise ScheduleFileError(source.problems)
    return stored


def _check_asset_refs(session: Session, parsed: _Parsed) -> None:
    """``{audio: id}`` names an asset of the file or one already in the database."""
    in_file = {asset.id for asset in parsed.programme.assets}
    wanted = {
        item.audio for slot in parsed.programme.slots for item in slot.play if isinstance(item, AudioItemSpec)
    }
    missing = wanted - in_file
    if missing:
        missing -= set(session.scalars(select(AudioAsset.id).where(AudioAsset.id.in_(missing))))
    if not missing:
        return
    known = in_file | set(session.scalars(select(AudioAsset.id)))
    for slot in parsed.programme.slots:
        for index, item in enumerate(slot.play):
            if isinstance(item, AudioItemSpec) and item.audio in missing:
                loc: Loc = ("slots", parsed.index[("slots", slot.id)], "play", index, "audio")
                parsed.source.problem(loc, _unknown("audio asset", item.audio, known))
    raise ScheduleFileError(parsed.source.problems)


def _check_rules(session: Session, parsed: _Parsed, settings: Settings) -> None:
    """Refuse the load when one of the file's slots breaks a programme rule (the transaction rolls back)."""
    from radio.schedule.planning import validate_slots

    ids = [slot.id for slot in parsed.programme.slots]
    rows = [row for row in (session.get(Slot, ident) for ident in ids) if row is not None]
    for violation in validate_slots(session, rows, settings):
        ident = next(i for i in (violation.slot_id, violation.other_slot_id, *violation.slot_ids) if i in ids)
        parsed.source.problem(("slots", parsed.index[("slots", ident)]), violation.message)
    if parsed.source.problems:
        raise ScheduleFileError(parsed.source.problems)


def _write(
    session: Session,
    programme: Programme,
    report: LoadReport,
    stored: dict[str, tuple[str, float | None]],
    settings: Settings,
    actor: str = audit.ACTOR_CLI,
) -> None:
    # Flushing by stage keeps foreign keys satisfied whatever order the unit of work picks.
    for zone in programme.zones:
        _upsert(session, Zone, zone.id, {"name": zone.name}, report.counts["zones"])
    for segment in programme.segments:
        _upsert(session, Segment, segment.id, {"name": segment.name}, report.counts["segments"])
    session.flush()
    for zone in programme.zones:
        for node in zone.nodes:
            values = {"zone_id": zone.id, "name": node.name}
            _upsert(session, Node, node.id, values, report.counts["nodes"], {"online": False, "session": 0})
    for bulletin in programme.bulletins:
        _write_bulletin(session, bulletin, report, actor)
    for asset in programme.assets:
        _write_asset(session, asset, stored[asset.id], settings, report.counts["assets"])
    session.flush()
    for group in programme.groups:
        _write_group(session, group, report.counts["groups"])
    session.flush()
    from radio.logbook import asrun
    from radio.web.queries import slot_out  # the slots API's audit shape (imported late: web imports this module)

    for slot in programme.slots:
        row = session.get(Slot, slot.id)
        before = slot_out(row).model_dump(mode="json") if row is not None else None
        counts = Counts()
        # As the slots API does before a change: past occurrences that left no row are stored as missed, as
        # the slot is now, so reports of past periods do not change with the rule (docs/audit.md).
        write_slot(session, slot, counts, before_change=functools.partial(
            asrun.record_unaired, session, [slot.id], tz=settings.tz, grace_s=settings.misfire_grace_s))
        report.counts["slots"].add(counts)
        if counts.created or counts.updated:
            session.flush()
            after = slot_out(session.get_one(Slot, slot.id)).model_dump(mode="json")
            audit.record(session, actor=actor, action=audit.SLOT_CREATED if counts.created else audit.SLOT_UPDATED,
                         entity_type="slot", entity_id=slot.id, before=before, after=after)
    session.flush()


_M = TypeVar("_M", Zone, Node, Segment, Bulletin, Slot, AudioAsset, NodeGroup)


def _upsert(
    session: Session,
    model: type[_M],
    ident: str,
    values: dict[str, Any],
    counts: Counts,
    on_create: dict[str, Any] | None = None,
) -> tuple[_M, bool]:
    """Create or update one row, assigning only changed columns; returns (row, created)."""
    row = session.get(model, ident)
    if row is None:
        row = model(id=ident, **values, **(on_create or {}))
        session.add(row)
        counts.created += 1
        return row, True
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    for name, value in changed.items():
        setattr(row, name, value)
    if changed:
        counts.updated += 1
    else:
        counts.unchanged += 1
    return row, False


def _write_bulletin(session: Session, spec: BulletinSpec, report: LoadReport, actor: str = audit.ACTOR_CLI) -> None:
    """Upsert a bulletin and audit it like the programme API does: created / updated / approved, before and after."""
    values: dict[str, Any] = {
        "segment_id": spec.segment,
        "title": spec.title,
        "text": spec.text,
        "audio_sha256": spec.audio,
        "engine": spec.engine,
        "voice": spec.voice,
        "rate": spec.rate,
    }
    existing = session.get(Bulletin, spec.id)
    was_approved = existing is not None and existing.status == BulletinStatus.APPROVED
    content_changed = existing is not None and (existing.text, existing.audio_sha256) != (
        spec.text,
        spec.audio,
    )
    if spec.approved is True:
        values["status"] = BulletinStatus.APPROVED.value
    elif spec.approved is False or existing is None or content_changed:
        # New words have not been approved by anyone: they wait for approval again.
        values["status"] = BulletinStatus.DRAFT.value
        if content_changed and was_approved:
            report.back_to_draft.append(spec.id)
    before = audit.snapshot(existing) if existing is not None else None
    counts = Counts()
    row, created = _upsert(session, Bulletin, spec.id, values, counts)
    report.counts["bulletins"].add(counts)
    if not (counts.created or counts.updated):
        return
    session.flush()
    after = audit.snapshot(row)
    content = {key for key in values if key != "status"}
    edited = created or before is None or any(before.get(key) != after.get(key) for key in content) \
        or (after["status"] != BulletinStatus.APPROVED and before.get("status") != after["status"])
    if edited:
        audit.record(session, actor=actor, action=audit.BULLETIN_CREATED if created else audit.BULLETIN_UPDATED,
                     entity_type="bulletin", entity_id=spec.id, before=before, after=after)
    if after["status"] == BulletinStatus.APPROVED and not was_approved:
        audit.record(session, actor=actor, action=audit.BULLETIN_APPROVED, entity_type="bulletin", entity_id=spec.id,
                     before=before, after=after)


def _write_asset(
    session: Session, spec: AssetSpec, stored: tuple[str, float | None], settings: Settings, counts: Counts
) -> None:
    sha256, duration = stored
    values: dict[str, Any] = {"name": spec.name, "sha256": sha256}
    row = session.get(AudioAsset, spec.id)
    if row is None or row.sha256 != sha256:  # new audio: measure it (the same audio keeps its duration)
        values["duration_s"] = duration if duration is not None else _stored_duration(settings, sha256)
    _upsert(session, AudioAsset, spec.id, values, counts)


def _stored_duration(settings: Settings, sha256: str) -> float:
    """Duration of audio already in the store, measured as the store measured it when it was made."""
    from radio.sound.ffmpeg import mp3_duration, probe_duration
    from radio.sound.store import AudioStore

    path = AudioStore(settings.audio_dir).path_for(sha256)
    return mp3_duration(path.read_bytes()) or probe_duration(path)


def _write_group(session: Session, spec: GroupSpec, counts: Counts) -> None:
    row = session.get(NodeGroup, spec.id)
    if row is None:
        session.add(
            NodeGroup(id=spec.id, name=spec.name, members=[NodeGroupMember(node_id=n) for n in spec.nodes])
        )
        counts.created += 1
        return
    before = Counts()
    _upsert(session, NodeGroup, spec.id, {"name": spec.name}, before)
    wanted, current = set(spec.nodes), {member.node_id for member in row.members}
    if wanted != current:
        row.members[:] = [member for member in row.members if member.node_id in wanted]
        row.members.extend(NodeGroupMember(node_id=node) for node in sorted(wanted - current))
    if before.updated or wanted != current:
        counts.updated += 1
    else:
        counts.unchanged += 1


_Item = tuple[str, str | None, str | None, str | None, float | None]  # kind, bulletin, asset, relay URL, seconds


def _playlist(spec: SlotSpec) -> list[_Item]:
    out: list[_Item] = []
    for item in spec.play:
        if isinstance(item, AudioItemSpec):
            out.append((ItemKind.AUDIO.value, None, item.audio, None, None))
        elif isinstance(item, RelayItemSpec):
            out.append((ItemKind.RELAY.value, None, None, item.relay, item.relay_s))
        else:
            out.append((ItemKind.BULLETIN.value, item, None, None, None))
    return out


def _slot_items(playlist: list[_Item]) -> list[SlotItem]:
    return [
        SlotItem(position=i, kind=kind, bulletin_id=bulletin, asset_id=asset, relay_url=url, relay_s=seconds)
        for i, (kind, bulletin, asset, url, seconds) in enumerate(playlist)
    ]


def _slot_state(spec: SlotSpec) -> tuple[dict[str, Any], set[str], set[str], list[_Item]]:
    values: dict[str, Any] = {
        "name": spec.name,
        "segment_id": spec.segment,
        "start_time": spec.time,
        "weekdays": spec.weekdays_column,
        "interval_weeks": spec.every_weeks,
        "dates": [day.isoformat() for day in spec.dates],
        "exclude_dates": [day.isoformat() for day in spec.exclude],
        "valid_from": spec.valid_from,
        "valid_until": spec.valid_until,
        "holidays": spec.holidays,
        "priority": spec.priority,
        "enabled": spec.enabled,
        "duration_s": spec.duration,
    }
    targets = set() if spec.zones in (None, "all") else set(spec.zones)
    return values, targets, set(spec.groups or ()), _playlist(spec)


def write_slot(session: Session, spec: SlotSpec, counts: Counts,
               before_change: Callable[[], object] | None = None) -> None:
    """Create or update one slot; ``before_change`` runs first when a stored slot is about to change."""
    values, targets, groups, playlist = _slot_state(spec)
    row = session.get(Slot, spec.id)
    if row is None:
        row = Slot(
            id=spec.id,
            **values,
            items=_slot_items(playlist),
            targets=[SlotTarget(zone_id=zone) for zone in sorted(targets)],
            group_targets=[SlotGroupTarget(group_id=group) for group in sorted(groups)],
        )
        session.add(row)
        counts.created += 1
        return
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    stored = [(i.kind, i.bulletin_id, i.asset_id, i.relay_url, i.relay_s) for i in row.items]
    current = {target.zone_id for target in row.targets}
    current_groups = {target.group_id for target in row.group_targets}
    if not changed and stored == playlist and current == targets and current_groups == groups:
        counts.unchanged += 1
        return
    if before_change is not None:
        before_change()
    for name, value in changed.items():
        setattr(row, name, value)
    if stored != playlist:
        row.items.clear()
        session.flush()  # the old (slot_id, position) keys must be gone before the new ones go in
        row.items.extend(_slot_items(playlist))
    if current != targets:
        row.targets[:] = [t for t in row.targets if t.zone_id in targets]
        row.targets.extend(SlotTarget(zone_id=zone) for zone in sorted(targets - current))
    if current_groups != groups:
        row.group_targets[:] = [t for t in row.group_targets if t.group_id in groups]
        row.group_targets.extend(SlotGroupTarget(group_id=group) for group in sorted(groups - current_groups))
    counts.updated += 1


# --------------------------------------------------------------------------- export


class _Flow(list[Any]):
    """A list written on one line: [mon, tue]."""


class _FlowMap(dict[str, Any]):
    """A mapping written on one line: {id: x, name: y}."""


class _Quoted(str):
    """A string always written in double quotes: "06:30" (unquoted, YAML 1.1 reads 17:00 as 1020)."""


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"'))
_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(
    _FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)

_EXPORT_HEADER = """\
# Programme exported from the radio database; load it back with `radio schedule load <file>`.
# Format: docs/schedule-format.md
"""


def export_programme(factory: sessionmaker[Session], *, site: SiteSpec | None = None) -> str:
    """The whole programme as a file load_programme reads back to the same database state.

    Bulletins in the "submitted" state are written without ``approved`` (so reloading keeps them
    submitted); the site block is written only when ``site`` is given (the database has no site name).
    Audio assets are written as ``{id, name, sha256}``: the audio itself stays in the audio store.
    """
    with factory() as session:
        document: dict[str, Any] = {}
        if site is not None:
            document["site"] = _FlowMap(name=site.name, timezone=site.timezone)
        document["zones"] = [_export_zone(zone) for zone in _all(session, Zone)]
        if groups := _all(session, NodeGroup):
            document["groups"] = [
                _FlowMap(id=g.id, name=g.name, nodes=_Flow(sorted(g.node_ids, key=_natural))) for g in groups
            ]
        document["segments"] = [_FlowMap(id=s.id, name=s.name) for s in _all(session, Segment)]
        if assets := _all(session, AudioAsset):
            document["assets"] = [_FlowMap(id=a.id, name=a.name, sha256=a.sha256) for a in assets]
        document["bulletins"] = [_export_bulletin(b) for b in _all(session, Bulletin)]
        document["slots"] = [_export_slot(s) for s in _all(session, Slot)]
    body = yaml.dump(document, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=110)
    return _EXPORT_HEADER + body


def _all(session: Session, model: type[_M]) -> list[_M]:
    return sorted(session.scalars(select(model)), key=lambda row: _natural(row.id))


def _natural(ident: str) -> list[Any]:
    """tdp-2 before tdp-10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", ident)]


def _export_zone(zone: Zone) -> dict[str, Any]:
    nodes = sorted(zone.nodes, key=lambda node: _natural(node.id))
    return {"id": zone.id, "name": zone.name, "nodes": [_FlowMap(id=n.id, name=n.name) for n in nodes]}


def _export_bulletin(bulletin: Bulletin) -> dict[str, Any]:
    out: dict[str, Any] = {"id": bulletin.id}
    if bulletin.segment_id:
        out["segment"] = bulletin.segment_id
    out["title"] = bulletin.title
    if bulletin.status == BulletinStatus.APPROVED:
        out["approved"] = True
    elif bulletin.status == BulletinStatus.DRAFT:
        out["approved"] = False
    out |= _present(
        audio=bulletin.audio_sha256, engine=bulletin.engine, voice=bulletin.voice, rate=bulletin.rate
    )
    if bulletin.text is not None:
        out["text"] = bulletin.text + "\n"  # a clean "|" block; the loader strips surrounding blanks
    return out


def _export_slot(slot: Slot) -> dict[str, Any]:
    out: dict[str, Any] = {"id": slot.id, "name": slot.name}
    if slot.segment_id:
        out["segment"] = slot.segment_id
    wall = slot.start_time
    out["time"] = _Quoted(wall.strftime("%H:%M:%S" if wall.second else "%H:%M"))
    if slot.weekdays:
        out["days"] = _Flow(slot.weekdays.split(","))
    elif not slot.dates:
        out["days"] = "daily"
    if slot.interval_weeks != 1:
        out["every_weeks"] = slot.interval_weeks
    out |= _present(**{"from": slot.valid_from, "until": slot.valid_until})
    if slot.dates:
        out["dates"] = _Flow(dt.date.fromisoformat(str(day)) for day in slot.dates)
    if slot.exclude_dates:
        out["except"] = _Flow(dt.date.fromisoformat(str(day)) for day in slot.exclude_dates)
    if slot.holidays != "keep":
        out["holidays"] = slot.holidays
    if slot.priority != Priority.NORMAL:
        out["priority"] = str(slot.priority)
    if slot.targets or not slot.group_targets:
        out["zones"] = _Flow(sorted(slot.zone_ids, key=_natural)) if slot.targets else "all"
    if slot.group_targets:
        out["groups"] = _Flow(sorted(slot.group_ids, key=_natural))
    if slot.duration_s is not None:
        out["duration"] = _Quoted(_length(slot.duration_s))
    out["play"] = _Flow(_export_item(item) for item in slot.items)
    if not slot.enabled:
        out["enabled"] = False
    return out


def _export_item(item: SlotItem) -> Any:
    if item.kind == ItemKind.AUDIO:
        return _FlowMap(audio=item.asset_id)
    if item.kind == ItemKind.RELAY:
        seconds = item.relay_s or 0.0
        if seconds % 60 == 0:
            return _FlowMap(relay=item.relay_url, minutes=int(seconds // 60))
        return _FlowMap(relay=item.relay_url, seconds=int(seconds) if seconds.is_integer() else seconds)
    return item.bulletin_id


def _length(seconds: float) -> str:
    """"15m" for whole minutes, else "90s" (read back by _parse_duration to the same seconds)."""
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds)}s" if seconds.is_integer() else f"{seconds!r}s"


def _present(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


__all__ = [
    "AssetSpec",
    "AudioItemSpec",
    "BulletinSpec",
    "Counts",
    "GroupSpec",
    "LoadReport",
    "NodeSpec",
    "Programme",
    "RelayItemSpec",
    "SegmentSpec",
    "SiteSpec",
    "SlotSpec",
    "ZoneSpec",
    "TABLES_VI",
    "export_programme",
    "load_programme",
    "parse_programme",
]
