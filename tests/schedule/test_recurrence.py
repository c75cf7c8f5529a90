"""Occurrence expansion: RRULE semantics, validity, exclusions, holidays, time zones."""

from __future__ import annotations

import datetime as dt
import os
import time
from zoneinfo import ZoneInfo

import holidays as pyholidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radio.models import Slot
from radio.schedule.recurrence import WEEKDAYS, SlotRule, is_holiday, next_occurrence, occurrences

SITE = ZoneInfo("Asia/Ho_Chi_Minh")
UTC = dt.UTC
WEEKDAYS_MON_FRI = ("mon", "tue", "wed", "thu", "fri")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def local_days(found: list[dt.datetime], tz: dt.tzinfo = SITE) -> list[str]:
    return [when.astimezone(tz).strftime("%a %Y-%m-%d %H:%M") for when in found]


# --------------------------------------------------------------------------- examples


def test_weekday_slot_airs_at_site_wall_clock() -> None:
    """A Mon-Fri 06:30 slot airs at 06:30 Vietnam time, i.e. 23:30 UTC the day before."""
    rule = SlotRule(start_time=dt.time(6, 30), weekdays=WEEKDAYS_MON_FRI)
    found = occurrences(rule, utc(2024, 3, 3), utc(2024, 3, 10), SITE)
    assert local_days(found) == [
        f"{d} 2024-03-{n:02d} 06:30" for d, n in [("Mon", 4), ("Tue", 5), ("Wed", 6), ("Thu", 7), ("Fri", 8)]
    ]
    assert found[0] == utc(2024, 3, 3, 23, 30)
    assert all(when.tzinfo is UTC for when in found)


def test_window_is_half_open() -> None:
    """An occurrence exactly at ``start`` is included and one exactly at ``end`` is not."""
    rule = SlotRule(start_time=dt.time(7))
    at = utc(2024, 5, 2, 0)  # 07:00 in Vietnam
    assert occurrences(rule, at, at + dt.timedelta(days=1), SITE) == [at]
    assert occurrences(rule, at - dt.timedelta(days=1), at, SITE) == [at - dt.timedelta(days=1)]


def test_empty_or_reversed_window_gives_nothing() -> None:
    """A window whose end is not after its start has no occurrences."""
    rule = SlotRule(start_time=dt.time(7))
    assert occurrences(rule, utc(2024, 5, 2), utc(2024, 5, 2), SITE) == []
    assert occurrences(rule, utc(2024, 5, 3), utc(2024, 5, 2), SITE) == []


def test_no_weekdays_and_no_dates_means_every_day() -> None:
    """Empty weekdays with no one-off dates airs every day."""
    rule = SlotRule(start_time=dt.time(18))
    assert len(occurrences(rule, utc(2024, 6, 1), utc(2024, 7, 1), SITE)) == 30


def test_dates_without_weekdays_means_only_those_dates() -> None:
    """Empty weekdays with one-off dates airs only on those dates."""
    rule = SlotRule(start_time=dt.time(8), dates=(dt.date(2024, 10, 19), dt.date(2024, 10, 26)))
    found = occurrences(rule, utc(2024, 1, 1), utc(2025, 1, 1), SITE)
    assert local_days(found) == ["Sat 2024-10-19 08:00", "Sat 2024-10-26 08:00"]


def test_dates_add_to_weekdays() -> None:
    """One-off dates are added to the weekly occurrences (RDATE)."""
    rule = SlotRule(start_time=dt.time(7), weekdays=("tue",), dates=(dt.date(2024, 3, 23),))
    found = occurrences(rule, utc(2024, 3, 17), utc(2024, 3, 31), SITE)
    assert local_days(found) == ["Tue 2024-03-19 07:00", "Sat 2024-03-23 07:00", "Tue 2024-03-26 07:00"]


def test_interval_counts_weeks_from_valid_from() -> None:
    """Every 2 weeks is counted from the week of valid_from."""
    rule = SlotRule(
        start_time=dt.time(7, 30), weekdays=("sat",), interval_weeks=2, valid_from=dt.date(2024, 7, 6)
    )
    found = occurrences(rule, utc(2024, 6, 1), utc(2024, 8, 20), SITE)
    assert [when.astimezone(SITE).date().isoformat() for when in found] == [
        "2024-07-06",
        "2024-07-20",
        "2024-08-03",
        "2024-08-17",
    ]


def test_interval_counts_weeks_from_anchor_without_valid_from() -> None:
    """Without valid_from, weeks count from the week of 2024-01-01, before and after it."""
    rule = SlotRule(start_time=dt.time(6), weekdays=("mon",), interval_weeks=2)
    found = occurrences(rule, utc(2023, 12, 1), utc(2024, 2, 1), SITE)
    assert [when.astimezone(SITE).date().isoformat() for when in found] == [
        "2023-12-04",
        "2023-12-18",
        "2024-01-01",
        "2024-01-15",
        "2024-01-29",
    ]


def test_interval_phase_is_stable_far_ahead() -> None:
    """A fortnightly slot keeps its phase years later, whatever window is asked for."""
    rule = SlotRule(start_time=dt.time(6), weekdays=("mon",), interval_weeks=2)
    found = occurrences(rule, utc(2031, 3, 1), utc(2031, 4, 1), SITE)
    for when in found:
        assert (when.astimezone(SITE).date() - dt.date(2024, 1, 1)).days % 14 == 0
    assert [when.astimezone(SITE).day for when in found] == [3, 17, 31]


def test_validity_bounds_are_inclusive() -> None:
    """valid_from and valid_until are both days on which the slot airs."""
    rule = SlotRule(
        start_time=dt.time(7, 30), valid_from=dt.date(2024, 3, 1), valid_until=dt.date(2024, 3, 3)
    )
    found = occurrences(rule, utc(2024, 1, 1), utc(2025, 1, 1), SITE)
    assert [when.astimezone(SITE).day for when in found] == [1, 2, 3]


def test_validity_and_exclusions_apply_to_one_off_dates() -> None:
    """One-off dates outside validity, or excluded, do not air."""
    rule = SlotRule(
        start_time=dt.time(9),
        dates=(dt.date(2024, 2, 1), dt.date(2024, 3, 5), dt.date(2024, 3, 6)),
        exclude_dates=(dt.date(2024, 3, 6),),
        valid_from=dt.date(2024, 3, 1),
    )
    found = occurrences(rule, utc(2024, 1, 1), utc(2025, 1, 1), SITE)
    assert local_days(found) == ["Tue 2024-03-05 09:00"]


def test_holidays_skip_leaves_out_tet() -> None:
    """With holidays: skip, the Tết days (and other public holidays) are left out."""
    rule = SlotRule(start_time=dt.time(6, 30), weekdays=WEEKDAYS_MON_FRI, holidays="skip")
    week = (utc(2025, 1, 26), utc(2025, 2, 1))  # Mon 27/1 (29 Tết) .. Fri 31/1: all holidays in 2025
    assert occurrences(rule, *week, SITE) == []
    kept = SlotRule(start_time=dt.time(6, 30), weekdays=WEEKDAYS_MON_FRI)
    assert len(occurrences(kept, *week, SITE)) == 5


def test_holiday_calendar_is_vietnamese() -> None:
    """is_holiday knows Tết, 30/4, 1/5 and 2/9 and not an ordinary day."""
    assert all(
        is_holiday(day)
        for day in (dt.date(2026, 2, 17), dt.date(2024, 4, 30), dt.date(2024, 5, 1), dt.date(2024, 9, 2))
    )
    assert not is_holiday(dt.date(2024, 3, 5))


def test_nonexistent_wall_time_uses_offset_before_gap() -> None:
    """02:30 on the New York spring-forward day is read with the offset before the gap (RFC 5545)."""
    tz = ZoneInfo("America/New_York")
    rule = SlotRule(start_time=dt.time(2, 30), dates=(dt.date(2024, 3, 10),))
    assert occurrences(rule, utc(2024, 3, 1), utc(2024, 4, 1), tz) == [utc(2024, 3, 10, 7, 30)]


def test_ambiguous_wall_time_is_first_occurrence() -> None:
    """01:30 on the New York fall-back day is its first (daylight-time) occurrence, fold=0."""
    tz = ZoneInfo("America/New_York")
    rule = SlotRule(start_time=dt.time(1, 30, fold=1), dates=(dt.date(2024, 11, 3),))
    assert occurrences(rule, utc(2024, 11, 1), utc(2024, 12, 1), tz) == [utc(2024, 11, 3, 5, 30)]


def test_naive_window_is_rejected() -> None:
    """Naive datetimes are refused rather than read in the server's local time."""
    rule = SlotRule(start_time=dt.time(7))
    with pytest.raises(ValueError, match="aware"):
        occurrences(rule, dt.datetime(2024, 1, 1), utc(2024, 2, 1), SITE)
    with pytest.raises(ValueError, match="aware"):
        next_occurrence(rule, dt.datetime(2024, 1, 1), SITE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weekdays": ("mon", "moon")}, "weekday"),
        ({"interval_weeks": 0}, "interval"),
        ({"holidays": "maybe"}, "holidays"),
    ],
)
def test_rule_rejects_invalid_fields(kwargs: dict[str, object], message: str) -> None:
    """SlotRule refuses unknown weekday names, intervals below 1 and unknown holiday policies."""
    with pytest.raises(ValueError, match=message):
        SlotRule(start_time=dt.time(7), **kwargs)  # type: ignore[arg-type]


def test_from_slot_reads_model_columns() -> None:
    """SlotRule.from_slot parses the comma-separated weekdays and the ISO date lists of a Slot row."""
    slot = Slot(
        id="s",
        name="S",
        start_time=dt.time(17),
        weekdays="mon,wed",
        interval_weeks=2,
        dates=["2024-03-23"],
        exclude_dates=["2024-04-29"],
        valid_from=dt.date(2024, 3, 1),
        valid_until=None,
        holidays="skip",
    )
    assert SlotRule.from_slot(slot) == SlotRule(
        start_time=dt.time(17),
        weekdays=("mon", "wed"),
        interval_weeks=2,
        dates=(dt.date(2024, 3, 23),),
        exclude_dates=(dt.date(2024, 4, 29),),
        valid_from=dt.date(2024, 3, 1),
        holidays="skip",
    )


def test_next_occurrence_is_strictly_after() -> None:
    """next_occurrence never returns the instant it is given."""
    rule = SlotRule(start_time=dt.time(6, 30), weekdays=WEEKDAYS_MON_FRI)
    at = utc(2024, 3, 4, 23, 30)  # Tue 05/03 06:30 in Vietnam
    assert next_occurrence(rule, at - dt.timedelta(seconds=1), SITE) == at
    assert next_occurrence(rule, at, SITE) == utc(2024, 3, 5, 23, 30)


def test_next_occurrence_skips_holidays_and_long_gaps() -> None:
    """next_occurrence crosses Tết and far-off valid_from dates."""
    rule = SlotRule(start_time=dt.time(6, 30), weekdays=("wed",), holidays="skip")
    # Wed 29/1/2025 is Tết: the next one is Wed 5/2/2025.
    assert next_occurrence(rule, utc(2025, 1, 27), SITE) == utc(2025, 2, 4, 23, 30)
    later = SlotRule(start_time=dt.time(6, 30), valid_from=dt.date(2031, 6, 1))
    assert next_occurrence(later, utc(2026, 1, 1), SITE) == utc(2031, 5, 31, 23, 30)


def test_next_occurrence_none_when_finished() -> None:
    """A rule past its valid_until, or whose one-off dates are past, has no next occurrence."""
    ended = SlotRule(start_time=dt.time(7, 30), weekdays=("sat",), valid_until=dt.date(2024, 6, 30))
    assert next_occurrence(ended, utc(2024, 7, 1), SITE) is None
    one_off = SlotRule(start_time=dt.time(8), dates=(dt.date(2024, 10, 19),))
    assert next_occurrence(one_off, utc(2024, 1, 1), SITE) == utc(2024, 10, 19, 1)
    assert next_occurrence(one_off, utc(2024, 10, 19, 1), SITE) is None
    never = SlotRule(
        start_time=dt.time(8),
        weekdays=("mon",),
        valid_from=dt.date(2024, 3, 5),
        valid_until=dt.date(2024, 3, 9),
    )
    assert next_occurrence(never, utc(2024, 1, 1), SITE) is None


def test_result_does_not_depend_on_process_timezone() -> None:
    """The server's TZ environment variable never changes the result."""
    rule = SlotRule(
        start_time=dt.time(6, 30),
        weekdays=("mon", "thu"),
        interval_weeks=2,
        holidays="skip",
        dates=(dt.date(2024, 4, 6),),
        exclude_dates=(dt.date(2024, 4, 11),),
    )
    window = (utc(2024, 3, 1), utc(2024, 6, 1))
    reference = occurrences(rule, *window, SITE)
    reference_next = next_occurrence(rule, window[0], SITE)
    saved = os.environ.get("TZ")
    try:
        for zone in ("America/New_York", "Pacific/Kiritimati", "UTC"):
            os.environ["TZ"] = zone
            time.tzset()
            assert occurrences(rule, *window, SITE) == reference
            assert next_occurrence(rule, window[0], SITE) == reference_next
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


# --------------------------------------------------------------------------- properties

ZONES = ["Asia/Ho_Chi_Minh", "America/New_York", "Europe/London", "Australia/Lord_Howe", "UTC"]
DAY_RANGE = {"min_value": dt.date(2023, 6, 1), "max_value": dt.date(2027, 6, 1)}


@st.composite
def rules(draw: st.DrawFn) -> SlotRule:
    valid_from = draw(st.none() | st.dates(**DAY_RANGE))
    valid_until = draw(
        st.none() | st.dates(min_value=valid_from or DAY_RANGE["min_value"], max_value=DAY_RANGE["max_value"])
    )
    return SlotRule(
        start_time=draw(st.times()),
        weekdays=tuple(draw(st.lists(st.sampled_from(WEEKDAYS), unique=True))),
        interval_weeks=draw(st.integers(1, 5)),
        dates=tuple(draw(st.lists(st.dates(**DAY_RANGE), max_size=6))),
        exclude_dates=tuple(draw(st.lists(st.dates(**DAY_RANGE), max_size=6))),
        valid_from=valid_from,
        valid_until=valid_until,
        holidays=draw(st.sampled_from(["keep", "skip"])),
    )


windows = st.tuples(
    st.datetimes(
        min_value=dt.datetime(2023, 9, 1), max_value=dt.datetime(2027, 3, 1), timezones=st.just(UTC)
    ),
    st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=120)),
).map(lambda pair: (pair[0], pair[0] + pair[1]))


def airs_on(rule: SlotRule, day: dt.date) -> bool:
    """An independent, day-by-day reading of the documented rule."""
    if (rule.valid_from and day < rule.valid_from) or (rule.valid_until and day > rule.valid_until):
        return False
    if day in rule.exclude_dates:
        return False
    if rule.holidays == "skip" and day in pyholidays.country_holidays("VN", years=day.year):
        return False
    if day in rule.dates:
        return True
    if not rule.weekdays and rule.dates:
        return False
    if WEEKDAYS[day.weekday()] not in (rule.weekdays or WEEKDAYS):
        return False
    base = rule.valid_from or dt.date(2024, 1, 1)
    weeks = ((day - dt.timedelta(days=day.weekday())) - (base - dt.timedelta(days=base.weekday()))).days // 7
    return weeks % rule.interval_weeks == 0


def brute_force(rule: SlotRule, start: dt.datetime, end: dt.datetime, tz: ZoneInfo) -> list[dt.datetime]:
    day, last = (
        start.astimezone(tz).date() - dt.timedelta(days=2),
        end.astimezone(tz).date() + dt.timedelta(days=2),
    )
    found = set()
    while day <= last:
        if airs_on(rule, day):
            when = dt.datetime.combine(day, rule.start_time.replace(fold=0), tzinfo=tz).astimezone(UTC)
            if start <= when < end:
                found.add(when)
        day += dt.timedelta(days=1)
    return sorted(found)


@settings(max_examples=300, deadline=None)
@given(rule=rules(), window=windows)
def test_property_occurrences_obey_every_rule_field(
    rule: SlotRule, window: tuple[dt.datetime, dt.datetime]
) -> None:
    """In the site zone occurrences are sorted, unique, in the window, at the wall time, on allowed days."""
    start, end = window
    found = occurrences(rule, start, end, SITE)
    assert found == sorted(set(found))
    for when in found:
        assert start <= when < end and when.utcoffset() == dt.timedelta(0)
        local = when.astimezone(SITE)
        day = local.date()
        assert local.time() == rule.start_time
        assert WEEKDAYS[day.weekday()] in (rule.weekdays or WEEKDAYS) or day in rule.dates
        if rule.one_off_only:
            assert day in rule.dates
        assert rule.valid_from is None or day >= rule.valid_from
        assert rule.valid_until is None or day <= rule.valid_until
        assert day not in rule.exclude_dates
        assert rule.holidays == "keep" or not is_holiday(day)


@settings(max_examples=300, deadline=None)
@given(rule=rules(), window=windows, zone=st.sampled_from(ZONES))
def test_property_matches_day_by_day_reading(
    rule: SlotRule, window: tuple[dt.datetime, dt.datetime], zone: str
) -> None:
    """In any zone (DST ones included) the result equals a naive day-by-day evaluation of the rule."""
    tz = ZoneInfo(zone)
    assert occurrences(rule, *window, tz) == brute_force(rule, *window, tz)


@settings(max_examples=150, deadline=None)
@given(
    rule=rules(),
    after=st.datetimes(
        min_value=dt.datetime(2023, 9, 1), max_value=dt.datetime(2027, 3, 1), timezones=st.just(UTC)
    ),
)
def test_property_next_occurrence_is_first_occurrence_after(rule: SlotRule, after: dt.datetime) -> None:
    """next_occurrence equals the first element of occurrences strictly after the instant."""
    nxt = next_occurrence(rule, after, SITE)
    horizon = after + dt.timedelta(days=3 * 365)
    upcoming = occurrences(rule, after + dt.timedelta(microseconds=1), horizon, SITE)
    if upcoming:
        assert nxt == upcoming[0]
    else:
        assert nxt is None or nxt >= horizon


def test_holiday_names_are_vietnamese() -> None:
    """The schedule page names the holiday a "skip holidays" slot rests on, in Vietnamese."""
    from radio.schedule.recurrence import holiday_name

    assert holiday_name(dt.date(2026, 2, 17)) == "Tết Nguyên Đán"  # lunar new year, from the lunar calendar
    assert holiday_name(dt.date(2026, 9, 2)) is not None
    assert holiday_name(dt.date(2026, 3, 10)) is None
