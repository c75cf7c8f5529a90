"""When a programme slot airs: expanding its recurrence into UTC instants.

The rule follows iCalendar (RFC 5545) RRULE semantics, evaluated with :mod:`dateutil.rrule`::

    FREQ=WEEKLY;INTERVAL=<interval_weeks>;BYDAY=<weekdays>;WKST=MO;DTSTART=<base>
    + RDATE <dates>   - EXDATE <exclude_dates>   - Vietnamese public holidays (when "skip")

How the weekday and date fields combine:

* ``weekdays`` non-empty: those weekdays, every ``interval_weeks`` weeks, plus the one-off ``dates``.
* ``weekdays`` empty and ``dates`` empty: every day (every ``interval_weeks`` weeks).
* ``weekdays`` empty and ``dates`` non-empty: only the one-off ``dates``.

Week counting starts at the Monday-based week containing ``valid_from`` (or the week of
2024-01-01 when the slot has no start date), so "every 2 weeks" keeps its phase however far ahead
we look. Validity, exclusions and holiday skipping apply to the one-off dates too.

``start_time`` is a wall-clock time in the site's zone. A time that does not exist on a day (a DST
gap) is read with the offset before the gap, and an ambiguous one (a DST overlap) as its first
occurrence (``fold=0``), as RFC 5545 prescribes. The process's own ``TZ`` never matters: every
computation uses the zone passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import holidays as pyholidays
from dateutil import rrule

if TYPE_CHECKING:
    from radio.models import Slot

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ANCHOR = dt.date(2024, 1, 1)  # a Monday: week 0 for interval counting when a slot has no valid_from
HolidayPolicy = Literal["keep", "skip"]

_RRULE_DAYS = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)
_ONE_DAY = dt.timedelta(days=1)
_MAX_INSTANT = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, kw_only=True)
class SlotRule:
    """The recurrence fields of a :class:`~radio.models.Slot`, typed and validated."""

    start_time: dt.time
    weekdays: tuple[str, ...] = ()
    interval_weeks: int = 1
    dates: tuple[dt.date, ...] = ()
    exclude_dates: tuple[dt.date, ...] = ()
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None
    holidays: HolidayPolicy = "keep"

    def __post_init__(self) -> None:
        bad = [day for day in self.weekdays if day not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown weekday(s) {bad}; use {', '.join(WEEKDAYS)}")
        if self.interval_weeks < 1:
            raise ValueError("interval_weeks must be at least 1")
        if self.holidays not in ("keep", "skip"):
            raise ValueError("holidays must be 'keep' or 'skip'")
        # valid_from after valid_until is not an error here: such a rule simply never airs.

    @classmethod
    def from_slot(cls, slot: Slot) -> SlotRule:
        """Build the rule from a stored slot (weekdays "mon,wed", ISO date strings in JSON)."""
        return cls(
            start_time=slot.start_time,
            weekdays=tuple(day.strip() for day in (slot.weekdays or "").split(",") if day.strip()),
            interval_weeks=slot.interval_weeks or 1,
            dates=tuple(_as_date(value) for value in slot.dates or ()),
            exclude_dates=tuple(_as_date(value) for value in slot.exclude_dates or ()),
            valid_from=slot.valid_from,
            valid_until=slot.valid_until,
            holidays="skip" if slot.holidays == "skip" else "keep",
        )

    @property
    def one_off_only(self) -> bool:
        """True when the slot airs only on its listed ``dates``."""
        return not self.weekdays and bool(self.dates)

    @property
    def last_date(self) -> dt.date | None:
        """The last local date the rule can ever air on, or None when it is open-ended."""
        if self.one_off_only:
            last = max(self.dates)
            return min(last, self.valid_until) if self.valid_until else last
        return self.valid_until


def occurrences(slot: SlotRule, start: dt.datetime, end: dt.datetime, tz: dt.tzinfo) -> list[dt.datetime]:
    """Every instant the slot airs in ``[start, end)``, as sorted, unique, aware UTC datetimes."""
    _require_aware(start, "start")
    _require_aware(end, "end")
    if end <= start:
        return []
    # A wall time maps to an instant within a day of its date, so pad the local date range by one.
    first = _shift(_local_date(start, tz), -_ONE_DAY)
    last = _shift(_local_date(end, tz), _ONE_DAY)
    instants = {_instant(day, slot.start_time, tz) for day in _dates(slot, first, last)}
    return sorted(when for when in instants if when is not None and start <= when < end)


def next_occurrence(rule: SlotRule, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The first instant strictly after ``after``, or None when the rule never airs again."""
    _require_aware(after, "after")
    start = after + dt.timedelta(microseconds=1)
    if rule.one_off_only:  # straight to the listed dates, however far apart (no scanning week by week)
        return next((when for day in sorted(rule.dates) if day >= _shift(_local_date(start, tz), -_ONE_DAY)
                     for when in occurrences(rule, start, _day_end(day, tz), tz)), None)
    if rule.valid_from:  # nothing airs before the first valid day: start there
        first = _day_start(_shift(rule.valid_from, -_ONE_DAY), tz)
        start = max(start, first)
    # Any open-ended rule airs at least once per interval outside its exclusions and holidays
    # (at most ~10 days a year), so scanning past those bounds a few intervals is conclusive.
    stop_date = _horizon(rule, _local_date(start, tz))
    if rule.last_date:
        stop_date = min(stop_date, rule.last_date)
    chunk = dt.timedelta(weeks=rule.interval_weeks + 4)
    while _local_date(start, tz) <= _shift(stop_date, _ONE_DAY):
        end = start + chunk if _MAX_INSTANT - start > chunk else _MAX_INSTANT
        found = occurrences(rule, start, end, tz)
        if found:
            return found[0]
        if end == _MAX_INSTANT:  # scanned to the end of the calendar (year 9999)
            return None
        start = end
    return None


def is_holiday(day: dt.date) -> bool:
    """A Vietnamese public holiday (Tết and the substituted days off included)."""
    return day in _vn_holidays(day.year)


def _dates(rule: SlotRule, first: dt.date, last: dt.date) -> Iterable[dt.date]:
    """Local dates in ``[first, last]`` the rule airs on, after validity, exclusions and holidays."""
    if rule.valid_from:
        first = max(first, rule.valid_from)
    if rule.valid_until:
        last = min(last, rule.valid_until)
    if first > last:
        return []
    candidates = {day for day in rule.dates if first <= day <= last}
    if not rule.one_off_only:
        candidates.update(_weekly_dates(rule, first, last))
    excluded = set(rule.exclude_dates)
    skip_holidays = rule.holidays == "skip"
    return sorted(
        day for day in candidates if day not in excluded and not (skip_holidays and is_holiday(day))
    )


def _weekly_dates(rule: SlotRule, first: dt.date, last: dt.date) -> list[dt.date]:
    """The weekly part of the rule between two local dates, via dateutil's RRULE."""
    base_week = _monday(rule.valid_from or ANCHOR)
    # Start the RRULE at the last week in phase on or before ``first``'s week: same result, bounded
    # work. Floor division keeps the phase for dates before the base week too (no valid_from).
    period = 7 * rule.interval_weeks
    skipped_periods = (_monday(first) - base_week).days // period
    dtstart = dt.datetime.combine(base_week + dt.timedelta(days=skipped_periods * period), dt.time())
    days = rule.weekdays or WEEKDAYS
    recurrence = rrule.rrule(
        rrule.WEEKLY,
        dtstart=dtstart,
        interval=rule.interval_weeks,
        wkst=rrule.MO,
        byweekday=[_RRULE_DAYS[WEEKDAYS.index(day)] for day in days],
        until=dt.datetime.combine(last, dt.time()),
    )
    out: list[dt.date] = []
    try:
        out.extend(when.date() for when in recurrence if when.date() >= first)
    except (ValueError, OverflowError):  # dateutil runs past year 9999 at the end of the calendar
        pass
    return out


def _instant(day: dt.date, wall: dt.time, tz: dt.tzinfo) -> dt.datetime | None:
    """The UTC instant of a wall-clock time on a local date; gaps and overlaps resolve with fold=0.

    None at the very ends of the calendar (year 1 or 9999), where the instant is not representable.
    """
    local = dt.datetime.combine(day, wall.replace(tzinfo=None, fold=0), tzinfo=tz)
    try:
        return local.astimezone(dt.UTC)
    except OverflowError:
        return None


def _shift(day: dt.date, delta: dt.timedelta) -> dt.date:
    """``day + delta``, clamped to [date.min, date.max]: a stored date near year 1 or 9999 never crashes."""
    try:
        return day + delta
    except OverflowError:
        return dt.date.max if delta > dt.timedelta(0) else dt.date.min


def _day_start(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    try:
        return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.UTC) if day.year == 1 else _MAX_INSTANT


def _day_end(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The instant two days after ``day`` starts (covers the day's wall times in any zone), clamped."""
    if day >= dt.date.max - 2 * _ONE_DAY:
        return _MAX_INSTANT
    return _day_start(day + 2 * _ONE_DAY, tz)


def _local_date(when: dt.datetime, tz: dt.tzinfo) -> dt.date:
    """The local date of an instant; at the ends of the calendar, the nearest representable date."""
    try:
        return when.astimezone(tz).date()
    except OverflowError:
        return dt.date.max if when.year > 1 else dt.date.min


def _horizon(rule: SlotRule, today: dt.date) -> dt.date:
    """A date past which an open-ended rule that has not aired yet never will (clamped to date.max)."""
    latest = max((today, rule.valid_from or today, *rule.dates, *rule.exclude_dates))
    return _shift(latest, dt.timedelta(weeks=3 * rule.interval_weeks + 56))


def _monday(day: dt.date) -> dt.date:
    return _shift(day, -dt.timedelta(days=day.weekday()))


def _as_date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _require_aware(value: dt.datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {value.isoformat()}")


@lru_cache(maxsize=64)
def _vn_holidays(year: int) -> frozenset[dt.date]:
    return frozenset(_vn_holiday_names(year))


def holiday_name(day: dt.date) -> str | None:
    """The holiday's Vietnamese name ("Tết Nguyên Đán", "Ngày Văn hóa Việt Nam"…), or None on a working day."""
    return _vn_holiday_names(day.year).get(day)


@lru_cache(maxsize=64)
def _vn_holiday_names(year: int) -> dict[dt.date, str]:
    return dict(pyholidays.country_holidays("VN", years=year, language="vi").items())
