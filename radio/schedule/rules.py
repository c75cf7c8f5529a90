"""Programme rules: conflicts, quiet hours and session caps, checked over a year of occurrences.

Pure and fast: no database access. :mod:`radio.schedule.planning` turns stored slots into
:class:`PlannedSlot` values (targets resolved to nodes, durations estimated) and calls :func:`check`.

The rules (Thông tư 39/2020/TT-BTTTT priorities: thông thường, ưu tiên, khẩn cấp):

* **conflict** — two enabled slots of the *same* priority whose node sets intersect and whose
  occurrences ``[start, start + duration)`` overlap. Different priorities never conflict: at air
  time the higher priority goes first. Emergency slots conflict with each other like any others.
* **quiet_hours** — a non-emergency occurrence that intersects the site's quiet window (local wall
  time, e.g. ``21:30-06:00`` spanning midnight; equal ends mean no quiet hours).
* **session_length** — a non-emergency slot longer than ``session_max_minutes``.
* **sessions_per_day** — more than ``sessions_per_day`` non-emergency occurrences starting on one
  local day on one zone (TDP).

Disabled slots, and slots with no occurrence in the horizon, are never reported: they do not air.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from bisect import insort
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from radio.models import Priority
from radio.schedule.recurrence import SlotRule, occurrences

RuleName = Literal["conflict", "quiet_hours", "session_length", "sessions_per_day"]

# --------------------------------------------------------------------------- duration estimate

# Measured with espeak-ng (vi, rate 150, the default) on the demo programme's eleven bulletins:
# 0.33 s per *written* word, abbreviations (UBND, TTHC) and numbers expanded by the normaliser
# included — about 180 written words a minute; the estimate is within ±15 % of the real audio.
SECONDS_PER_WORD = 0.33
CHIME_S = 1.8  # the jingle that opens every recorded part (audio/chime.wav, 1.5 s, plus its gap)
SENTENCE_PAUSE_S = 0.4  # Settings.sentence_pause_ms default
PARAGRAPH_PAUSE_S = 0.8  # Settings.paragraph_pause_ms default; also between playlist items

_SENTENCE_END = re.compile(r"[.!?…;]+(?=\s|$)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def estimate_duration(texts: list[str], asset_durations: list[float], relay_seconds: list[float]) -> float:
    """Seconds a playlist of spoken texts, audio assets and relays is expected to last.

    ``0.33 s × words + 0.4 s × sentence breaks + 0.8 s × paragraph breaks`` per text, one chime
    (1.8 s) when anything is recorded, 0.8 s between recorded items, plus the assets' and relays'
    own lengths. Calibrated for espeak at the default rate; gTTS speaks a little slower.
    """
    speech = 0.0
    for text in texts:
        paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        sentences = sum(max(1, len(_SENTENCE_END.findall(p.strip()))) for p in paragraphs)
        speech += SECONDS_PER_WORD * len(text.split())
        speech += SENTENCE_PAUSE_S * (sentences - len(paragraphs)) + PARAGRAPH_PAUSE_S * max(0, len(paragraphs) - 1)
    recorded = len(texts) + len(asset_durations)
    if recorded:
        speech += CHIME_S + PARAGRAPH_PAUSE_S * (recorded - 1)
    return speech + sum(asset_durations) + sum(relay_seconds)


# --------------------------------------------------------------------------- input and output


@dataclass(frozen=True, kw_only=True)
class PlannedSlot:
    """A slot as the rules see it: when it airs, on which nodes, how long, at which priority."""

    id: str
    name: str
    rule: SlotRule
    node_ids: frozenset[str]  # targets resolved to nodes (zones + groups, or every node for the whole ward)
    zone_ids: frozenset[str]  # zones touched: for messages and per-zone session counts
    priority: str
    duration_s: float
    enabled: bool = True
    duration_estimated: bool = False  # True: duration_s was estimated from the content (said in messages)


@dataclass(frozen=True)
class RuleViolation:
    """One broken rule. ``at`` is the first offending occurrence (UTC) when the rule is about one."""

    slot_id: str
    rule: RuleName
    message: str
    other_slot_id: str | None = None
    at: dt.datetime | None = None
    slot_ids: tuple[str, ...] = field(default=())  # every slot involved (sessions_per_day: all that day's)

    def involves(self, ids: Collection[str]) -> bool:
        """Whether any slot in ``ids`` takes part in this violation."""
        return any(ident in ids for ident in (self.slot_id, self.other_slot_id, *self.slot_ids))


# --------------------------------------------------------------------------- the check

_INSTANT = dt.timedelta(microseconds=1)
MAX_LOOKAHEAD_DAYS = 5 * 366  # a slot starting later than this past horizon_start is only partly checked

_WEEKDAY_VI = ("thứ Hai", "thứ Ba", "thứ Tư", "thứ Năm", "thứ Sáu", "thứ Bảy", "Chủ nhật")
_PRIORITY_VI: dict[str, str] = {
    Priority.NORMAL: "thông thường", Priority.PRIORITY: "ưu tiên", Priority.EMERGENCY: "khẩn cấp"
}
_QUIET_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class _Occ:
    start: dt.datetime
    end: dt.datetime
    slot: int  # index into the slot list


def check(
    slots: Sequence[PlannedSlot],
    *,
    tz: dt.tzinfo,
    quiet_hours: str,
    session_max_minutes: float,
    sessions_per_day: int,
    horizon_start: dt.datetime,
    horizon_days: int = 366,
    zone_names: Mapping[str, str] | None = None,
) -> list[RuleViolation]:
    """Every rule the enabled slots break within the horizon, first offending occurrence first.

    The horizon is ``[horizon_start, horizon_start + horizon_days)``; when a slot's ``valid_from`` is
    later, the horizon is extended so that slot too is checked for ``horizon_days`` (up to
    ``MAX_LOOKAHEAD_DAYS`` ahead). ``zone_names`` (id → name) makes messages read "Tổ dân phố số 1".

    Complexity, with N enabled slots and O occurrences in the horizon (N × 366 for daily slots):
    expansion O(O) (RRULE per slot); conflicts O(O log O): one sort per priority, then a sweep in
    which each occurrence meets only the occurrences still on air at its start (a handful), and node
    sets are compared once per pair of slots that overlap in time. Quiet hours O(O) (cached per
    wall-clock span), session length O(N), sessions per day O(O × zones per slot). 500 slots over a
    year (~130,000 occurrences) take about two seconds, most of it in the RRULE expansion.
    """
    if horizon_start.tzinfo is None:
        raise ValueError("horizon_start must be an aware datetime")
    quiet = _parse_quiet(quiet_hours)
    names = dict(zone_names or {})
    active = [i for i, slot in enumerate(slots) if slot.enabled]
    end = _horizon_end([slots[i] for i in active], horizon_start, horizon_days, tz)
    expanded: dict[int, list[_Occ]] = {}
    for i in active:
        # An occurrence occupies at least its start instant, even with no length.
        length = max(dt.timedelta(seconds=max(0.0, slots[i].duration_s)), _INSTANT)
        expanded[i] = [_Occ(at, at + length, i) for at in occurrences(slots[i].rule, horizon_start, end, tz)]
    found: list[RuleViolation] = []
    found += _conflicts(slots, expanded, tz, names)
    ordinary = {i: occs for i, occs in expanded.items() if occs and slots[i].priority != Priority.EMERGENCY}
    found += _quiet_hours(slots, ordinary, tz, quiet, quiet_hours)
    found += _session_length(slots, ordinary, session_max_minutes)
    found += _sessions_per_day(slots, ordinary, tz, sessions_per_day, names)
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda v: (v.at or far, v.slot_id, v.rule, v.other_slot_id or ""))


def _horizon_end(slots: Sequence[PlannedSlot], start: dt.datetime, days: int, tz: dt.tzinfo) -> dt.datetime:
    """``start + days``, pushed out so that a slot starting later (``valid_from``) is still checked for
    ``days`` days and one-off ``dates`` further ahead are checked too; at most ``MAX_LOOKAHEAD_DAYS`` more."""
    end = start + dt.timedelta(days=days)
    limit = end + dt.timedelta(days=MAX_LOOKAHEAD_DAYS)
    first, last = start.astimezone(tz).date(), limit.date()
    for slot in slots:
        rule = slot.rule
        if rule.valid_from is not None and first < rule.valid_from and not rule.one_off_only:
            end = max(end, _midnight(min(rule.valid_from, last), tz) + dt.timedelta(days=days))
        for day in rule.dates:
            if first < day and (rule.valid_from is None or day >= rule.valid_from):
                end = max(end, _midnight(min(day, last), tz) + dt.timedelta(days=2))
    return min(end, limit)


def _midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


def _conflicts(
    slots: Sequence[PlannedSlot], expanded: Mapping[int, list[_Occ]], tz: dt.tzinfo, names: Mapping[str, str]
) -> list[RuleViolation]:
    """A sweep over each priority's occurrences in start order, keeping those still on air."""
    found: list[RuleViolation] = []
    by_priority: dict[str, list[_Occ]] = defaultdict(list)
    for i, occs in expanded.items():
        if slots[i].node_ids:
            by_priority[slots[i].priority] += occs
    for priority, occs in by_priority.items():
        occs.sort(key=lambda occ: (occ.start, occ.slot))
        on_air: list[tuple[dt.datetime, int, _Occ]] = []  # sorted by end
        reported: set[tuple[int, int]] = set()
        shares: dict[tuple[int, int], bool] = {}
        for occ in occs:
            cut = 0
            while cut < len(on_air) and on_air[cut][0] <= occ.start:
                cut += 1
            del on_air[:cut]
            for _, _, other in on_air:
                pair = (min(occ.slot, other.slot), max(occ.slot, other.slot))
                if other.slot == occ.slot or pair in reported:
                    continue
                if pair not in shares:
                    shares[pair] = not slots[pair[0]].node_ids.isdisjoint(slots[pair[1]].node_ids)
                if shares[pair]:
                    reported.add(pair)
                    found.append(_conflict(slots, occ, other, priority, tz, names))
            insort(on_air, (occ.end, occ.slot, occ), key=lambda entry: (entry[0], entry[1]))
    return found


def _conflict(
    slots: Sequence[PlannedSlot], occ: _Occ, other: _Occ, priority: str, tz: dt.tzinfo, names: Mapping[str, str]
) -> RuleViolation:
    this, that = slots[occ.slot], slots[other.slot]
    zones = this.zone_ids & that.zone_ids
    if names and set(names) <= zones:
        where = "toàn phường"
    elif zones:
        where = ", ".join(_zone(zone, names) for zone in sorted(zones))
    else:
        where = "cụm loa " + ", ".join(sorted(this.node_ids & that.node_ids))
    message = (
        f'Khung "{this.id}" trùng giờ với khung "{that.id}" trên {where} vào {_when(occ.start, tz)}: '
        f'"{that.id}" phát {_span(other, tz)}, "{this.id}" phát {_span(occ, tz)} '
        f"(cùng mức ưu tiên {_PRIORITY_VI.get(priority, priority)})"
    )
    return RuleViolation(this.id, "conflict", message, that.id, occ.start, (this.id, that.id))


def _quiet_hours(
    slots: Sequence[PlannedSlot],
    expanded: Mapping[int, list[_Occ]],
    tz: dt.tzinfo,
    quiet: tuple[int, int] | None,
    label: str,
) -> list[RuleViolation]:
    if quiet is None:
        return []
    found = []
    window = label.replace("-", "–")
    known: dict[tuple[dt.time, dt.timedelta], bool] = {}  # the answer depends on the wall-clock span only
    for i, occs in expanded.items():
        for occ in occs:
            local = occ.start.astimezone(tz).replace(tzinfo=None)
            local_end = occ.end.astimezone(tz).replace(tzinfo=None)
            key = (local.time(), local_end - local)
            if key not in known:
                known[key] = _in_quiet(local, local_end, quiet)
            if known[key]:
                message = f"Vi phạm giờ yên tĩnh {window}: phát lúc {_clock(local)} {_day(local)}"
                if not _quiet_at(local.hour * 60 + local.minute, quiet):
                    message += f", kéo dài đến {_clock(local_end)}"
                found.append(RuleViolation(slots[i].id, "quiet_hours", message, None, occ.start, (slots[i].id,)))
                break
    return found


def _session_length(
    slots: Sequence[PlannedSlot], expanded: Mapping[int, list[_Occ]], limit_minutes: float
) -> list[RuleViolation]:
    found = []
    for i, occs in expanded.items():
        slot = slots[i]
        if slot.duration_s > limit_minutes * 60:
            estimated = " (ước tính từ nội dung)" if slot.duration_estimated else ""
            message = (
                f"Phiên phát dài {_length(slot.duration_s)}{estimated}, "
                f"vượt giới hạn {_length(limit_minutes * 60)}"
            )
            found.append(RuleViolation(slot.id, "session_length", message, None, occs[0].start, (slot.id,)))
    return found


def _sessions_per_day(
    slots: Sequence[PlannedSlot],
    expanded: Mapping[int, list[_Occ]],
    tz: dt.tzinfo,
    cap: int,
    names: Mapping[str, str],
) -> list[RuleViolation]:
    """Per zone and local day; each distinct set of slots overflowing a zone is reported once (its first day)."""
    per_day: dict[tuple[str, dt.date], list[_Occ]] = defaultdict(list)
    for i, occs in expanded.items():
        zones = slots[i].zone_ids
        for occ in occs:
            day = occ.start.astimezone(tz).date()
            for zone in zones:
                per_day[(zone, day)].append(occ)
    found = []
    seen: set[tuple[str, frozenset[int]]] = set()
    for (zone, day), occs in sorted(per_day.items(), key=lambda item: (item[0][1], item[0][0])):
        if len(occs) <= cap:
            continue
        involved = frozenset(occ.slot for occ in occs)
        if (zone, involved) in seen:
            continue
        seen.add((zone, involved))
        occs.sort(key=lambda occ: (occ.start, occ.slot))
        listing = ", ".join(f'{_clock(occ.start.astimezone(tz))} "{slots[occ.slot].id}"' for occ in occs)
        message = (
            f"{_zone(zone, names)} có {len(occs)} phiên trong ngày {day:%d/%m/%Y}, vượt giới hạn {cap}: {listing}"
        )
        over = occs[cap]
        ids = tuple(dict.fromkeys(slots[occ.slot].id for occ in occs))
        found.append(RuleViolation(slots[over.slot].id, "sessions_per_day", message, None, over.start, ids))
    return found


# --------------------------------------------------------------------------- quiet window


def _parse_quiet(text: str) -> tuple[int, int] | None:
    """``"21:30-06:00"`` → (1290, 360) minutes of the day; equal ends → None (no quiet hours)."""
    match = _QUIET_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"quiet hours must be HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    return None if start == end else (start, end)


def _quiet_at(minute: int, quiet: tuple[int, int]) -> bool:
    """Whether a minute of the local day lies in the half-open window (which may span midnight)."""
    start, end = quiet
    return start <= minute < end if start < end else (minute >= start or minute < end)


def _in_quiet(local: dt.datetime, local_end: dt.datetime, quiet: tuple[int, int]) -> bool:
    """Whether a naive local wall-clock span meets a quiet window on any day it touches."""
    if local_end <= local:  # no length (or the wall clock turned back inside it): judge by the start
        return _quiet_at(local.hour * 60 + local.minute, quiet)
    start, end = quiet
    day = local.date() - dt.timedelta(days=1)
    while day <= local_end.date():
        midnight = dt.datetime.combine(day, dt.time())
        window_start = midnight + dt.timedelta(minutes=start)
        window_end = midnight + dt.timedelta(minutes=end if start < end else end + 24 * 60)
        if window_start < local_end and local < window_end:
            return True
        day += dt.timedelta(days=1)
    return False


# --------------------------------------------------------------------------- wording


def _zone(zone: str, names: Mapping[str, str]) -> str:
    return names.get(zone) or zone


def _clock(local: dt.datetime) -> str:
    return local.strftime("%H:%M:%S" if local.second else "%H:%M")


def _day(local: dt.datetime) -> str:
    return f"{_WEEKDAY_VI[local.weekday()]} {local:%d/%m/%Y}"


def _when(instant: dt.datetime, tz: dt.tzinfo) -> str:
    local = instant.astimezone(tz)
    return f"{_clock(local)} {_day(local)}"


def _span(occ: _Occ, tz: dt.tzinfo) -> str:
    end = occ.end.astimezone(tz)
    if end.microsecond:  # show whole seconds, rounded up: an estimate never looks shorter than it is
        end = end.replace(microsecond=0) + dt.timedelta(seconds=1)
    return f"{_clock(occ.start.astimezone(tz))}–{_clock(end)}"


def _length(seconds: float) -> str:
    """45 phút, 30 phút 20 giây, 50 giây (rounded up to the second)."""
    total = math.ceil(round(seconds, 6))
    minutes, rest = divmod(total, 60)
    if not minutes:
        return f"{rest} giây"
    return f"{minutes} phút" + (f" {rest} giây" if rest else "")


__all__ = [
    "CHIME_S",
    "SECONDS_PER_WORD",
    "PlannedSlot",
    "RuleName",
    "RuleViolation",
    "check",
    "estimate_duration",
]
