"""Programme rules: conflicts, quiet hours, session caps; examples, brute-force oracles, speed."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radio.models import Priority
from radio.schedule.recurrence import WEEKDAYS, SlotRule, occurrences
from radio.schedule.rules import PlannedSlot, RuleViolation, check, estimate_duration

SITE = ZoneInfo("Asia/Ho_Chi_Minh")
# Sunday 1 December 2024, local midnight: Monday 2/12 is the first weekday in the horizon.
START = dt.datetime(2024, 12, 1, tzinfo=SITE).astimezone(dt.UTC)
LIMITS: dict[str, Any] = {"quiet_hours": "21:30-06:00", "session_max_minutes": 30, "sessions_per_day": 6}
TDP = {f"tdp-{n}": f"TDP {n}" for n in range(1, 7)}


def slot(
    ident: str,
    at: str,
    *,
    days: tuple[str, ...] = ("mon",),
    nodes: tuple[str, ...] = ("loa-1",),
    zones: tuple[str, ...] = ("tdp-1",),
    minutes: float = 5,
    priority: str = Priority.NORMAL,
    enabled: bool = True,
    **rule: Any,
) -> PlannedSlot:
    hour, minute = (int(part) for part in at.split(":"))
    return PlannedSlot(
        id=ident,
        name=ident,
        rule=SlotRule(start_time=dt.time(hour, minute), weekdays=days, **rule),
        node_ids=frozenset(nodes),
        zone_ids=frozenset(zones),
        priority=priority,
        duration_s=minutes * 60,
        enabled=enabled,
    )


def run(slots: list[PlannedSlot], **overrides: Any) -> list[RuleViolation]:
    options: dict[str, Any] = {
        "tz": SITE, "horizon_start": START, "horizon_days": 366, "zone_names": TDP, **LIMITS, **overrides
    }
    return check(slots, **options)


def local(instant: dt.datetime | None) -> str:
    assert instant is not None
    return instant.astimezone(SITE).strftime("%a %Y-%m-%d %H:%M")


# --------------------------------------------------------------------------- conflicts


def test_conflict_names_both_slots_zone_and_first_overlap() -> None:
    """Two normal slots on the same loudspeaker overlapping on Mondays are one conflict, at the first Monday."""
    found = run([slot("chieu-ngay-thuong", "17:00", minutes=10), slot("tin-moi", "17:05", minutes=10)])
    assert len(found) == 1
    [violation] = found
    assert (violation.rule, violation.slot_id, violation.other_slot_id) == ("conflict", "tin-moi", "chieu-ngay-thuong")
    assert local(violation.at) == "Mon 2024-12-02 17:05"
    assert violation.message == (
        'Khung "tin-moi" trùng giờ với khung "chieu-ngay-thuong" trên TDP 1 vào 17:05 thứ Hai 02/12/2024: '
        '"chieu-ngay-thuong" phát 17:00–17:10, "tin-moi" phát 17:05–17:15 (cùng mức ưu tiên thông thường)'
    )


def test_conflict_is_reported_at_the_first_overlapping_occurrence() -> None:
    """A slot that only meets the other on Thursdays is reported on the first Thursday, once."""
    found = run([slot("a", "07:00", days=("mon", "thu")), slot("b", "07:02", days=("tue", "thu"))])
    assert [(v.rule, local(v.at)) for v in found] == [("conflict", "Thu 2024-12-05 07:02")]


def test_back_to_back_slots_do_not_conflict() -> None:
    """A slot starting exactly when the other ends is not an overlap."""
    assert run([slot("a", "17:00", minutes=10), slot("b", "17:10")]) == []


def test_different_priorities_and_disabled_slots_never_conflict() -> None:
    """A priority slot over a normal one goes first at air time; a disabled slot does not air."""
    assert run([slot("a", "17:00"), slot("b", "17:00", priority=Priority.PRIORITY)]) == []
    assert run([slot("a", "17:00"), slot("b", "17:00", enabled=False)]) == []


def test_same_priority_emergency_slots_conflict() -> None:
    """Two programmed emergency slots on the same loudspeaker at once are still a conflict."""
    found = run([slot(x, "17:00", priority=Priority.EMERGENCY) for x in ("a", "b")])
    assert [(v.rule, v.slot_id, v.other_slot_id) for v in found] == [("conflict", "b", "a")]
    assert "(cùng mức ưu tiên khẩn cấp)" in found[0].message


def test_whole_ward_conflict_says_toan_phuong() -> None:
    """When both slots cover every zone the message says the whole ward instead of listing six TDPs."""
    nodes, zones = ("loa-1", "loa-2"), tuple(TDP)
    found = run([slot("a", "06:30", nodes=nodes, zones=zones), slot("b", "06:31", nodes=nodes, zones=zones)])
    assert "trên toàn phường vào 06:31" in found[0].message


def test_slot_starting_after_the_horizon_is_checked_for_a_full_horizon() -> None:
    """A slot valid from two years ahead is compared with open-ended slots over its own first year."""
    later = dt.date(2026, 12, 1)
    found = run([slot("a", "17:00"), slot("b", "17:00", valid_from=later)])
    assert [(v.rule, local(v.at)) for v in found] == [("conflict", "Mon 2026-12-07 17:00")]


def test_one_off_dates_beyond_the_horizon_are_checked() -> None:
    """A one-off date 18 months ahead is checked; a validity starting in year 9999 is harmless."""
    one_off = slot("le", "17:00", days=(), dates=(dt.date(2026, 6, 1),))
    found = run([slot("a", "17:00"), one_off])
    assert [(v.rule, v.slot_id, local(v.at)) for v in found] == [("conflict", "le", "Mon 2026-06-01 17:00")]
    assert run([slot("a", "17:00"), slot("b", "17:00", valid_from=dt.date(9999, 1, 1))]) == []


def test_bad_quiet_hours_setting_is_an_error() -> None:
    """Quiet hours must be written HH:MM-HH:MM."""
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        run([slot("a", "17:00")], quiet_hours="21h30-6h")


# --------------------------------------------------------------------------- quiet hours


def test_quiet_hours_refuse_a_4_30_broadcast() -> None:
    """A 04:30 slot is refused naming the window, the time and the day."""
    [violation] = run([slot("som", "04:30", days=("tue",))])
    assert violation.rule == "quiet_hours"
    assert violation.message == "Vi phạm giờ yên tĩnh 21:30–06:00: phát lúc 04:30 thứ Ba 03/12/2024"


def test_quiet_hours_catch_a_slot_running_into_the_window() -> None:
    """A 21:15 slot of 20 minutes ends inside the quiet hours; one ending at 21:30 sharp does not."""
    [violation] = run([slot("toi", "21:15", minutes=20)])
    assert violation.message.endswith("phát lúc 21:15 thứ Hai 02/12/2024, kéo dài đến 21:35")
    assert run([slot("toi", "21:15", minutes=15)]) == []
    assert run([slot("sang", "06:00")]) == []


def test_emergency_slots_and_equal_ends_ignore_quiet_hours() -> None:
    """Emergency slots may air at night; quiet hours with equal ends mean no quiet hours."""
    assert run([slot("bao-lu", "04:30", priority=Priority.EMERGENCY)]) == []
    assert run([slot("som", "04:30")], quiet_hours="00:00-00:00") == []


# --------------------------------------------------------------------------- session caps


def test_session_length_is_limited() -> None:
    """A 45-minute normal slot breaks the 30-minute cap; an emergency one does not."""
    [violation] = run([slot("dai", "08:00", minutes=45)])
    assert (violation.rule, violation.message) == ("session_length", "Phiên phát dài 45 phút, vượt giới hạn 30 phút")
    assert run([slot("dai", "08:00", minutes=45, priority=Priority.EMERGENCY)]) == []
    estimated = PlannedSlot(**{**slot("x", "08:00", minutes=30.5).__dict__, "duration_estimated": True})
    [violation] = run([estimated])
    assert violation.message == "Phiên phát dài 30 phút 30 giây (ước tính từ nội dung), vượt giới hạn 30 phút"


def test_sessions_per_day_names_zone_day_and_slots() -> None:
    """Seven sessions on TDP 2 on Tuesday break the cap of six; the zone, the day and all seven slots are named."""
    times = ["06:30", "07:00", "09:00", "11:00", "14:00", "17:00", "18:00"]
    slots = [slot(f"s{n}", at, days=("tue",), nodes=(f"loa-{n}",), zones=("tdp-2",)) for n, at in enumerate(times)]
    [violation] = run(slots)
    assert violation.rule == "sessions_per_day"
    assert violation.message.startswith("TDP 2 có 7 phiên trong ngày 03/12/2024, vượt giới hạn 6: 06:30 \"s0\"")
    assert (violation.slot_id, local(violation.at)) == ("s6", "Tue 2024-12-03 18:00")
    assert violation.slot_ids == tuple(f"s{n}" for n in range(7))
    assert violation.involves({"s3"}) and not violation.involves({"other"})
    assert run(slots[:6]) == []
    assert run([*slots[:6], slot("x", "20:00", days=("tue",), zones=("tdp-2",), priority=Priority.EMERGENCY)]) == []


# --------------------------------------------------------------------------- duration estimate


def test_estimate_adds_speech_chime_pauses_assets_and_relays() -> None:
    """Words at 0.33 s, a chime when anything is recorded, pauses between items, assets and relays as given."""
    assert estimate_duration([], [], []) == 0
    assert estimate_duration([], [], [900]) == 900
    one = estimate_duration(["Một hai ba bốn năm sáu bảy tám chín mười."], [], [])
    assert one == pytest.approx(1.8 + 10 * 0.33)
    two = estimate_duration(["Câu một. Câu hai.\n\nĐoạn hai."], [1.5], [60])
    assert two == pytest.approx(1.8 + 6 * 0.33 + 0.4 + 0.8 + 0.8 + 1.5 + 60)


@pytest.mark.slow
def test_estimate_is_close_to_espeak(tmp_path: Path) -> None:
    """The estimate of a real bulletin is within 25 % of what espeak actually speaks."""
    from radio.settings import load_settings
    from radio.speech.prepare import prepare_speech

    text = "Sáng thứ 3 và thứ 5, Đoàn TN phường hỗ trợ bà con làm TTHC tại Bộ phận Một cửa UBND phường."
    spoken = prepare_speech([text], load_settings(data_dir=tmp_path)).duration_s
    assert estimate_duration([text], [], []) == pytest.approx(spoken, rel=0.25)


# --------------------------------------------------------------------------- speed and process TZ


def test_five_hundred_slots_over_a_year_are_checked() -> None:
    """500 slots (daily and weekly, 30 zones) are checked over 366 days; only real overlaps are reported."""
    slots = [
        slot(
            f"s{n}", f"{6 + n % 14:02d}:{(n * 7) % 60:02d}",
            days=() if n % 2 else ("mon", "wed", "fri"),
            nodes=(f"loa-{n % 60}",), zones=(f"tdp-{n % 30}",), minutes=3, holidays="skip" if n % 3 else "keep",
        )
        for n in range(500)
    ]
    found = run(slots, sessions_per_day=48)
    assert found and {v.rule for v in found} == {"conflict"}


@contextmanager
def process_tz(zone: str) -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_results_do_not_depend_on_process_timezone() -> None:
    """The server's TZ environment variable never changes what is found or when."""
    slots = [
        slot("a", "17:00", minutes=10), slot("b", "17:05"), slot("som", "05:50", minutes=15),
        slot("dai", "08:00", minutes=40), slot("c", "23:50", days=("sun",), minutes=20),
    ]
    reference = run(slots)
    assert {v.rule for v in reference} == {"conflict", "quiet_hours", "session_length"}
    for zone in ("America/New_York", "Pacific/Kiritimati", "UTC"):
        with process_tz(zone):
            assert run(slots) == reference


# --------------------------------------------------------------------------- properties

NODES = ("n1", "n2", "n3", "n4")
ORACLE_ZONES = ("Asia/Ho_Chi_Minh", "UTC", "Asia/Kolkata", "Asia/Kathmandu")  # no daylight saving
HORIZON_DAYS = 21


@st.composite
def programmes(draw: st.DrawFn, *, disjoint: bool = False) -> list[PlannedSlot]:
    count = draw(st.integers(1, 5))
    out = []
    for n in range(count):
        nodes = (
            frozenset({f"own-{n}"})
            if disjoint
            else frozenset(draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=3, unique=True)))
        )
        out.append(
            PlannedSlot(
                id=f"s{n}",
                name=f"s{n}",
                rule=SlotRule(
                    start_time=dt.time(draw(st.sampled_from([0, 5, 6, 7, 17, 21, 22, 23])),
                                       draw(st.sampled_from([0, 10, 20, 29, 30, 45, 59]))),
                    weekdays=tuple(draw(st.lists(st.sampled_from(WEEKDAYS), unique=True, max_size=4))),
                    interval_weeks=draw(st.integers(1, 2)),
                    valid_from=draw(st.none() | st.dates(dt.date(2024, 9, 1), dt.date(2024, 12, 1))),
                    valid_until=draw(st.none() | st.dates(dt.date(2024, 12, 1), dt.date(2025, 1, 31))),
                ),
                node_ids=nodes,
                zone_ids=frozenset({f"z-{n}"} if disjoint else {"z"}),
                priority=draw(st.sampled_from(list(Priority))),
                duration_s=draw(st.floats(0, 3 * 3600, allow_nan=False)),
                enabled=draw(st.booleans() | st.just(True)),
            )
        )
    return out


def origin(tz: dt.tzinfo) -> dt.datetime:
    """Local midnight of 1 December 2024 in the zone under test."""
    return dt.datetime(2024, 12, 1, tzinfo=tz).astimezone(dt.UTC)


def expand(p: PlannedSlot, tz: dt.tzinfo) -> list[tuple[dt.datetime, dt.datetime]]:
    """Occurrences as [start, end) spans; a slot with no length still occupies its start instant."""
    length = max(dt.timedelta(seconds=p.duration_s), dt.timedelta(microseconds=1))
    start = origin(tz)
    return [(at, at + length) for at in occurrences(p.rule, start, start + dt.timedelta(days=HORIZON_DAYS), tz)]


def conflict_oracle(slots: list[PlannedSlot], tz: dt.tzinfo) -> dict[frozenset[str], dt.datetime]:
    """Every pair of occurrences compared: the earliest instant two same-priority slots sound together."""
    found: dict[frozenset[str], dt.datetime] = {}
    for i, a in enumerate(slots):
        for b in slots[i + 1:]:
            if not (a.enabled and b.enabled) or a.priority != b.priority or a.node_ids.isdisjoint(b.node_ids):
                continue
            overlaps = [
                max(s1, s2) for s1, e1 in expand(a, tz) for s2, e2 in expand(b, tz) if s1 < e2 and s2 < e1
            ]
            if overlaps:
                found[frozenset({a.id, b.id})] = min(overlaps)
    return found


def quiet_oracle(slots: list[PlannedSlot], tz: dt.tzinfo, window: tuple[int, int]) -> dict[str, dt.datetime]:
    """Minute by minute: the start, then every whole minute while on air, read on the local clock."""
    begin, end = window

    def quiet(instant: dt.datetime) -> bool:
        clock = instant.astimezone(tz)
        minute = clock.hour * 60 + clock.minute
        return begin <= minute < end if begin < end else (minute >= begin or minute < end)

    found = {}
    for p in slots:
        if not p.enabled or p.priority == Priority.EMERGENCY or begin == end:
            continue
        for start, stop in expand(p, tz):
            probe, hit = start, quiet(start)
            probe = probe.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
            while not hit and probe < stop:
                hit, probe = quiet(probe), probe + dt.timedelta(minutes=1)
            if hit:
                found[p.id] = start
                break
    return found


@settings(max_examples=200, deadline=None)
@given(slots=programmes(), zone=st.sampled_from(ORACLE_ZONES))
def test_property_conflicts_match_pairwise_oracle(slots: list[PlannedSlot], zone: str) -> None:
    """Conflict detection finds exactly the pairs the all-pairs comparison finds, at the same first instant."""
    tz = ZoneInfo(zone)
    found = check(slots, tz=tz, horizon_start=origin(tz), horizon_days=HORIZON_DAYS, **LIMITS)
    expected = conflict_oracle(slots, tz)
    got = {frozenset({v.slot_id, v.other_slot_id or ""}): v.at for v in found if v.rule == "conflict"}
    assert got == expected


minutes_of_day = st.integers(0, 24 * 60 - 1)


@settings(max_examples=200, deadline=None)
@given(slots=programmes(), zone=st.sampled_from(ORACLE_ZONES), window=st.tuples(minutes_of_day, minutes_of_day))
def test_property_quiet_hours_match_minute_oracle(
    slots: list[PlannedSlot], zone: str, window: tuple[int, int]
) -> None:
    """The quiet-hours check flags exactly the slots a minute-by-minute reading flags, at the same occurrence."""
    tz = ZoneInfo(zone)
    text = "{:02d}:{:02d}-{:02d}:{:02d}".format(*divmod(window[0], 60), *divmod(window[1], 60))
    found = check(slots, tz=tz, horizon_start=origin(tz), horizon_days=HORIZON_DAYS, **{**LIMITS, "quiet_hours": text})
    expected = quiet_oracle(slots, tz, window)
    assert {v.slot_id: v.at for v in found if v.rule == "quiet_hours"} == expected


@settings(max_examples=100, deadline=None)
@given(slots=programmes(disjoint=True))
def test_property_disjoint_loudspeakers_never_conflict(slots: list[PlannedSlot]) -> None:
    """Slots that share no loudspeaker never conflict, whatever their times."""
    found = check(slots, tz=SITE, horizon_start=START, horizon_days=HORIZON_DAYS, **LIMITS)
    assert [v for v in found if v.rule == "conflict"] == []


@settings(max_examples=25, deadline=None)
@given(slots=programmes(), zone=st.sampled_from(["America/New_York", "Pacific/Kiritimati", "UTC"]))
def test_property_process_timezone_never_matters(slots: list[PlannedSlot], zone: str) -> None:
    """The whole result is the same whatever the process's own TZ."""
    reference = check(slots, tz=SITE, horizon_start=START, horizon_days=HORIZON_DAYS, **LIMITS)
    with process_tz(zone):
        assert check(slots, tz=SITE, horizon_start=START, horizon_days=HORIZON_DAYS, **LIMITS) == reference
