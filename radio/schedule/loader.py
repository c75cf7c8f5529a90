"""Programme files: YAML in, a validated pydantic tree, upserted into the database; and back out.

    parse_programme(path)            file -> Programme, or ScheduleFileError listing every problem
    load_programme(path, factory)    parse, then upsert in one transaction -> LoadReport
    export_programme(factory)        database -> YAML text that load_programme reads back

Problems name ``file:line: field.path: what is wrong``. The YAML is composed (not just loaded) so
the line of every mapping key and sequence item is known; pydantic errors are mapped back to them.

Loading is all-or-nothing and idempotent. Rows are upserted by id; rows in the database that the
file does not mention are left alone. The format is documented in ``docs/schedule-format.md``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.db import transaction
from radio.errors import ScheduleFileError
from radio.models import Bulletin, BulletinStatus, Node, Priority, Segment, Slot, SlotItem, SlotTarget, Zone
from radio.schedule.recurrence import WEEKDAYS

MAX_TEXT_CHARS = 20_000  # Settings.max_bulletin_chars default
DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
SECTIONS = ("site", "zones", "segments", "bulletins", "slots")
TABLES = ("zones", "nodes", "segments", "bulletins", "slots")

Loc = tuple[str | int, ...]

# --------------------------------------------------------------------------- value parsers

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TIME_RE = re.compile(r"(\d{1,2})(?::(\d{2})(?::(\d{2}))?|h(\d{2})?)")  # 06:30, 06:30:15, 6h30, 17h
_DMY_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

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
            "{value} is not a valid id (1-64 ASCII letters, digits, '-', '_' or '.', e.g. tdp-1)",
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
    raise PydanticCustomError("time", "{value} is not a valid time (HH:MM)", {"value": _show(value)})


def _parse_date(value: object) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            if match := _DMY_RE.fullmatch(value.strip()):  # 30/9/2024, as written in ward documents
                day, month, year = (int(part) for part in match.groups())
                return dt.date(year, month, day)
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError(
        "date", "{value} is not a valid date (YYYY-MM-DD or DD/MM/YYYY)", {"value": _show(value)}
    )


def _parse_days(value: object) -> Literal["daily"] | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) and _key(value) in _DAILY:
        return "daily"
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise PydanticCustomError("days", "write daily or a list of weekdays, e.g. [mon, wed, fri]")
    days = set()
    for item in items:
        day = _WEEKDAY_ALIASES.get(_key(item))
        if day is None:
            raise PydanticCustomError(
                "weekday",
                "{value} is not a weekday (use mon, tue, wed, thu, fri, sat, sun or t2..t7, cn)",
                {"value": _show(item)},
            )
        days.add(day)
    return tuple(day for day in WEEKDAYS if day in days)


def _parse_priority(value: object) -> str:
    priority = _PRIORITY_ALIASES.get(_key(value)) if isinstance(value, str) else None
    if priority is None:
        raise PydanticCustomError(
            "priority",
            "{value} is not a priority (use normal, priority or emergency; thông thường, ưu tiên, khẩn cấp)",
            {"value": _show(value)},
        )
    return priority.value


def _parse_zones(value: object) -> Literal["all"] | tuple[str, ...]:
    if isinstance(value, str) and _key(value) in _ALL_ZONES:
        return "all"
    if not isinstance(value, list) or not value:
        raise PydanticCustomError(
            "zones", "write all (the whole ward) or a list of zone ids, e.g. [tdp-1, tdp-2]"
        )
    return tuple(sorted({_parse_id(item) for item in value}))


def _parse_timezone(value: object) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone", "{value} is not a known time zone (e.g. Asia/Ho_Chi_Minh)", {"value": _show(value)}
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
            raise PydanticCustomError("text_empty", "the text is empty")
        if len(value) > limit:
            raise PydanticCustomError(
                "text_long",
                "the text is {length} characters long; the limit is {limit}",
                {"length": f"{len(value):,}", "limit": f"{limit:,}"},
            )
        return value

    @field_validator("audio")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_RE.fullmatch(value):
            raise PydanticCustomError(
                "audio", "audio must be the sha256 (64 lowercase hex digits) of a recording"
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
    zones: Targets = "all"
    play: Annotated[list[Id], Field(min_length=1)]
    enabled: bool = True

    @property
    def weekdays_column(self) -> str:
        """Slot.weekdays: "" is every day (only when there are no one-off dates), else day names."""
        if self.days is None or (self.days == "daily" and not self.dates):
            return ""
        return ",".join(WEEKDAYS if self.days == "daily" else self.days)


class Programme(BaseModel):
    """A whole programme file, validated and cross-checked."""

    site: SiteSpec | None = None
    zones: list[ZoneSpec] = []
    segments: list[SegmentSpec] = []
    bulletins: list[BulletinSpec] = []
    slots: list[SlotSpec] = []


_SPECS: dict[str, type[Spec]] = {
    "zones": ZoneSpec,
    "segments": SegmentSpec,
    "bulletins": BulletinSpec,
    "slots": SlotSpec,
}
_FIELD_NAMES = sorted(
    {
        info.alias or name
        for spec in (SiteSpec, NodeSpec, ZoneSpec, SegmentSpec, BulletinSpec, SlotSpec)
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
        self._problems.append((line, f"{where}: {_dotted(loc)}: {message}" if loc else f"{where}: {message}"))


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _read_yaml(path: Path, source: _Source) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        source.problem((), f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    except OSError as exc:
        source.file_problem(f"cannot read the file: {exc.strerror or exc}")
        return None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        detail = str(exc.problem or "")
        if exc.context:  # e.g. "while scanning a quoted scalar" that began earlier
            started = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            detail = f"{exc.context}{started}: {detail}"
        source.problem((), f"YAML syntax error: {detail}", line=line)
        return None
    except yaml.YAMLError as exc:
        source.problem((), f"YAML syntax error: {exc}")
        return None
    if node is None:
        source.problem((), "the file is empty")
        return None
    try:
        return _to_python(node, (), source, loader, frozenset())
    finally:
        loader.dispose()


def _to_python(
    node: yaml.Node, loc: Loc, source: _Source, loader: yaml.SafeLoader, seen: frozenset[int]
) -> Any:
    if id(node) in seen:
        source.problem(loc, "recursive YAML alias")
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


def _mapping(
    node: yaml.MappingNode, loc: Loc, source: _Source, loader: yaml.SafeLoader, seen: frozenset[int]
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    first_line: dict[Any, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            source.problem(loc, "only plain keys are supported (no '<<' merges or complex keys)", line=line)
            continue
        key = _scalar(key_node, loader)
        if key in first_line:
            source.problem((*loc, key), f"duplicate key (first at line {first_line[key]})", line=line)
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
    """
    path = Path(path)  # callers sometimes hand over a str
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
        zones=[spec for _, spec in items["zones"] if isinstance(spec, ZoneSpec)],
        segments=[spec for _, spec in items["segments"] if isinstance(spec, SegmentSpec)],
        bulletins=[spec for _, spec in items["bulletins"] if isinstance(spec, BulletinSpec)],
        slots=[spec for _, spec in items["slots"] if isinstance(spec, SlotSpec)],
    )
    _cross_check(items, source)
    if site and timezone and site.timezone != timezone:
        source.problem(
            ("site", "timezone"), f'"{site.timezone}" differs from the server\'s time zone "{timezone}"'
        )
    if source.problems:
        raise ScheduleFileError(source.problems)
    return programme


def _sections(data: Any, source: _Source) -> dict[str, Any]:
    if not isinstance(data, dict):
        source.problem((), f"the top level must be a mapping with the sections {', '.join(SECTIONS)}")
        return {}
    for key in data:
        if key not in SECTIONS:
            source.problem(
                (key,), f"unknown section{_suggest(key, SECTIONS)} (expected {', '.join(SECTIONS)})"
            )
    return {key: value for key, value in data.items() if key in SECTIONS}


def _validate_items(
    raw: Any, section: str, spec: type[_S], source: _Source, context: dict[str, Any]
) -> list[tuple[Any, _S | None]]:
    """Validate each item on its own, so one bad item does not hide the others' problems."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        source.problem((section,), "must be a list (each item starts with '- ')")
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
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        message = f"unknown field{_suggest(str(loc[-1]), _FIELD_NAMES)}"
    elif kind == "model_type" or kind == "model_attributes_type":
        message = "must be a mapping of fields (key: value)"
    elif kind == "too_short" and loc[-1] == "play":
        message = "list at least one bulletin id, e.g. [dvc-truc-tuyen]"
    elif kind not in _CUSTOM_ERRORS:
        message = f"{message} (got {_show(error['input'])})"
    source.problem(loc, message)


_CUSTOM_ERRORS = {
    "id",
    "time",
    "date",
    "days",
    "weekday",
    "priority",
    "zones",
    "timezone",
    "text_empty",
    "text_long",
    "audio",
}


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# --------------------------------------------------------------------------- cross-reference checks


def _cross_check(items: dict[str, list[tuple[Any, Any]]], source: _Source) -> None:
    """Duplicate ids, nodes in two zones, unknown references, impossible validity ranges.

    Runs on the raw items, so an item with a bad field still gets its references checked.
    """
    zones = _ids("zones", items["zones"], "zone", source)
    segments = _ids("segments", items["segments"], "segment", source)
    bulletins = _ids("bulletins", items["bulletins"], "bulletin", source)
    _ids("slots", items["slots"], "slot", source)
    _check_nodes([raw for raw, _ in items["zones"]], source)
    for index, (raw, _) in enumerate(items["bulletins"]):
        if isinstance(raw, dict):
            _check_bulletin(raw, ("bulletins", index), segments, source)
    for index, (raw, _) in enumerate(items["slots"]):
        if isinstance(raw, dict):
            _check_slot(raw, ("slots", index), zones, segments, bulletins, source)


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
            source.problem(loc, f'duplicate {kind} id "{ident}" (first at line {first[ident]})')
        else:
            first[ident] = source.line(loc)
    return set(first)


def _check_nodes(zones: list[Any], source: _Source) -> None:
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
                source.problem(loc, f'duplicate node id "{node_id}" (first at line {line})')
            else:
                source.problem(
                    loc,
                    f'node "{node_id}" is already in zone "{other_zone}" (line {line}); '
                    "a node belongs to exactly one zone",
                )


def _check_bulletin(raw: dict[Any, Any], loc: Loc, segments: set[str], source: _Source) -> None:
    _check_ref(raw.get("segment"), (*loc, "segment"), "segment", segments, source)
    if raw.get("text") is None and raw.get("audio") is None:
        source.problem((*loc, "text"), "required field is missing (a bulletin needs text, or audio)")


def _check_slot(
    raw: dict[Any, Any], loc: Loc, zones: set[str], segments: set[str], bulletins: set[str], source: _Source
) -> None:
    _check_ref(raw.get("segment"), (*loc, "segment"), "segment", segments, source)
    if isinstance(raw.get("zones"), list):
        for index, zone in enumerate(raw["zones"]):
            _check_ref(zone, (*loc, "zones", index), "zone", zones, source)
    if isinstance(raw.get("play"), list):
        for index, bulletin in enumerate(raw["play"]):
            _check_ref(bulletin, (*loc, "play", index), "bulletin", bulletins, source)
    valid_from, valid_until = _try_date(raw.get("from")), _try_date(raw.get("until"))
    if valid_from and valid_until and valid_from > valid_until:
        source.problem((*loc, "until"), f"{valid_until.isoformat()} is before from: {valid_from.isoformat()}")
    if raw.get("days") is None and not raw.get("dates"):
        source.problem(loc, "give days (daily or a list of weekdays) or dates (one-off dates), or both")


def _check_ref(value: Any, loc: Loc, kind: str, known: set[str], source: _Source) -> None:
    ident = _ident(value)
    if ident is not None and ident not in known:
        source.problem(loc, _unknown(kind, ident, known))


def _try_date(value: Any) -> dt.date | None:
    try:
        return _parse_date(value) if value is not None else None
    except PydanticCustomError:
        return None  # reported by the field validator


def _unknown(kind: str, ident: str, known: set[str]) -> str:
    return f'unknown {kind} "{ident}"{_suggest(ident, sorted(known))}'


# --------------------------------------------------------------------------- writing


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


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
        """One line, e.g. ``zones: 6 created, 0 updated, 0 unchanged; nodes: ...``."""
        parts = [
            f"{t}: {c.created} created, {c.updated} updated, {c.unchanged} unchanged"
            for t, c in self.counts.items()
        ]
        if self.back_to_draft:
            parts.append(f"back to draft (text changed): {', '.join(self.back_to_draft)}")
        return "; ".join(parts)


def load_programme(
    path: Path,
    factory: sessionmaker[Session],
    *,
    timezone: str | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
) -> LoadReport:
    """Validate the whole file, then upsert it in one transaction; nothing is written on any problem."""
    programme = parse_programme(path, timezone=timezone, max_text_chars=max_text_chars)
    report = LoadReport(path=str(path))
    with transaction(factory) as session:
        _write(session, programme, report)
    return report


def _write(session: Session, programme: Programme, report: LoadReport) -> None:
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
        _write_bulletin(session, bulletin, report)
    session.flush()
    for slot in programme.slots:
        _write_slot(session, slot, report.counts["slots"])
    session.flush()


_M = TypeVar("_M", Zone, Node, Segment, Bulletin, Slot)


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


def _write_bulletin(session: Session, spec: BulletinSpec, report: LoadReport) -> None:
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
    _upsert(session, Bulletin, spec.id, values, report.counts["bulletins"])


def _write_slot(session: Session, spec: SlotSpec, counts: Counts) -> None:
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
    }
    targets = set() if spec.zones == "all" else set(spec.zones)
    row = session.get(Slot, spec.id)
    if row is None:
        row = Slot(
            id=spec.id,
            **values,
            items=[SlotItem(position=i, bulletin_id=b) for i, b in enumerate(spec.play)],
            targets=[SlotTarget(zone_id=zone) for zone in sorted(targets)],
        )
        session.add(row)
        counts.created += 1
        return
    before = Counts()
    _upsert(session, Slot, spec.id, values, before)
    playlist_changed = [item.bulletin_id for item in row.items] != spec.play
    if playlist_changed:
        row.items.clear()
        session.flush()  # the old (slot_id, position) keys must be gone before the new ones go in
        row.items.extend(SlotItem(position=i, bulletin_id=b) for i, b in enumerate(spec.play))
    current = {target.zone_id for target in row.targets}
    if current != targets:
        row.targets[:] = [t for t in row.targets if t.zone_id in targets]
        row.targets.extend(SlotTarget(zone_id=zone) for zone in sorted(targets - current))
    if before.updated or playlist_changed or current != targets:
        counts.updated += 1
    else:
        counts.unchanged += 1


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
    """
    with factory() as session:
        document: dict[str, Any] = {}
        if site is not None:
            document["site"] = _FlowMap(name=site.name, timezone=site.timezone)
        document["zones"] = [_export_zone(zone) for zone in _all(session, Zone)]
        document["segments"] = [_FlowMap(id=s.id, name=s.name) for s in _all(session, Segment)]
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
    out["zones"] = _Flow(slot.zone_ids) if slot.targets else "all"
    out["play"] = _Flow(item.bulletin_id for item in slot.items)
    if not slot.enabled:
        out["enabled"] = False
    return out


def _present(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


__all__ = [
    "BulletinSpec",
    "Counts",
    "LoadReport",
    "NodeSpec",
    "Programme",
    "SegmentSpec",
    "SiteSpec",
    "SlotSpec",
    "ZoneSpec",
    "export_programme",
    "load_programme",
    "parse_programme",
]
