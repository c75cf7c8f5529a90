"""Programme files: parsing with file:line messages, all-or-nothing idempotent loading, export round trip."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.db import make_engine, migrate, session_factory, transaction
from radio.errors import ScheduleFileError
from radio.models import Base, Bulletin, BulletinStatus, Node, Slot
from radio.schedule import loader
from radio.schedule.loader import LoadReport, SiteSpec, export_programme, load_programme, parse_programme
from radio.schedule.recurrence import SlotRule, next_occurrence

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "schedules" / "tho-xuong-2024.yaml"
SITE_TZ = "Asia/Ho_Chi_Minh"

# A small valid programme; the bad-input cases below replace one line and name that line number.
MINI = """\
site: {name: Phường Thử, timezone: Asia/Ho_Chi_Minh}
zones:
  - id: tdp-1
    name: Tổ dân phố số 1
    nodes:
      - {id: loa-1, name: Loa 1}
  - id: tdp-2
    name: Tổ dân phố số 2
    nodes:
      - {id: loa-2, name: Loa 2}
segments:
  - {id: cds, name: Chuyển đổi số}
bulletins:
  - id: b1
    segment: cds
    title: Bản tin 1
    approved: true
    text: Kính thưa bà con! UBND phường hướng dẫn nộp hồ sơ TTHC trực tuyến.
slots:
  - id: s1
    name: Bản tin sáng
    time: "06:30"
    days: [mon, fri]
    from: 2024-03-01
    until: 2024-06-30
    priority: normal
    zones: [tdp-1]
    play: [b1]
"""


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    """The storage suite runs on SQLite and on a fresh PostgreSQL database."""
    engine = make_engine(db_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def other_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def dump(
    factory: sessionmaker[Session], *, skip: frozenset[str] = frozenset()
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order; ``skip`` names "table.column" to leave out."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with factory() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if f"{table.name}.{c.name}" not in skip]
            rows = session.execute(select(*columns)).all()
            out[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return out


def write(tmp_path: Path, text: str, name: str = "programme.yaml") -> Path:
    path = tmp_path / "schedules" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def edit(text: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def counts(report: LoadReport) -> dict[str, tuple[int, int, int]]:
    return {table: (c.created, c.updated, c.unchanged) for table, c in report.counts.items()}


def problems(exc: pytest.ExceptionInfo[ScheduleFileError]) -> list[str]:
    return exc.value.problems


# --------------------------------------------------------------------------- the demo file


def test_demo_file_loads_into_fresh_database(factory: sessionmaker[Session]) -> None:
    """The Thọ Xương demo creates 6 TDPs, their nodes offline, 5 segments, 11 bulletins and 8 slots."""
    report = load_programme(DEMO, factory, timezone=SITE_TZ)
    assert counts(report) == {
        "zones": (6, 0, 0),
        "nodes": (9, 0, 0),
        "segments": (5, 0, 0),
        "bulletins": (11, 0, 0),
        "slots": (8, 0, 0),
    }
    with factory() as session:
        assert all(not node.online for node in session.scalars(select(Node)))
        drafts = [b.id for b in session.scalars(select(Bulletin)) if b.status != BulletinStatus.APPROVED]
        assert drafts == ["doi-thoai-nhan-dan"]
        draft_slots = [
            s.id
            for s in session.scalars(select(Slot))
            if any(i.bulletin_id == "doi-thoai-nhan-dan" for i in s.items)
        ]
        assert draft_slots == ["thong-bao-doi-thoai"]


def test_demo_file_content_matches_the_plan() -> None:
    """The demo speaks the plan's topics with ward abbreviations, and has the required kinds of slot."""
    programme = parse_programme(DEMO)
    assert programme.site is not None and programme.site.name == "Phường Thọ Xương"
    text = "\n".join(b.text or "" for b in programme.bulletins)
    for phrase in (
        "Cổng dịch vụ công",
        "25 dịch vụ công thiết yếu",
        "Bộ phận Một cửa",
        "Đoàn thanh niên",
        "99%",
        "mã QR",
        "Nhà văn hóa TDP",
        "Điểm tiếp nhận ý kiến Nhân dân",
        "Chuyên nghiệp hơn - Thân thiện hơn - Hiệu quả hơn",
        "Tổ công nghệ số cộng đồng",
        "UBND",
        "TTHC",
        "CCHC",
        "7h30",
        "25/02/2024",
    ):
        assert phrase in text, phrase
    assert {s.id for s in programme.segments} >= {"cqtt", "cchc", "cds", "tiep-am", "khan-cap"}
    slots = {s.id: s for s in programme.slots}
    assert slots["doan-thanh-nien-t3-t5"].days == ("tue", "thu")
    assert slots["doan-thanh-nien-t3-t5"].time == dt.time(7)
    assert slots["chien-dich-cqtt-2024"].valid_until == dt.date(2024, 6, 30)
    assert {s.time for s in programme.slots} >= {dt.time(6, 30), dt.time(17)}


def test_demo_slots_still_air_in_2026(factory: sessionmaker[Session]) -> None:
    """Every demo slot except the 2024 campaign has occurrences in 2026 and later."""
    load_programme(DEMO, factory)
    tz = dt.timezone(dt.timedelta(hours=7))
    with factory() as session:
        upcoming = {
            s.id: next_occurrence(SlotRule.from_slot(s), dt.datetime(2026, 6, 1, tzinfo=dt.UTC), tz)
            for s in session.scalars(select(Slot))
        }
    assert [slot for slot, at in upcoming.items() if at is None] == ["chien-dich-cqtt-2024"]


def test_loading_twice_changes_nothing(factory: sessionmaker[Session]) -> None:
    """A second load of the same file reports everything unchanged and leaves every row as it was."""
    load_programme(DEMO, factory)
    before = dump(factory)
    report = load_programme(DEMO, factory)
    assert not report.changed
    assert all(c.created == c.updated == 0 and c.unchanged for c in report.counts.values())
    assert dump(factory) == before


# --------------------------------------------------------------------------- bad input

BAD_CASES = [
    pytest.param(
        [("zones: [tdp-1]", "zones: [tdp-1, tdp-9]")],
        27,
        "slots[0].zones[1]",
        'unknown zone "tdp-9"',
        id="unknown-zone",
    ),
    pytest.param(
        [("play: [b1]", "play: [b1, b9]")],
        28,
        "slots[0].play[1]",
        'unknown bulletin "b9"',
        id="unknown-bulletin",
    ),
    pytest.param(
        [("    segment: cds", "    segment: cdx")],
        15,
        "bulletins[0].segment",
        'unknown segment "cdx" (did you mean cds?)',
        id="unknown-segment",
    ),
    pytest.param(
        [("  - id: tdp-2", "  - id: tdp-1")],
        7,
        "zones[1].id",
        'duplicate zone id "tdp-1" (first at line 3)',
        id="duplicate-zone",
    ),
    pytest.param(
        [('time: "06:30"', 'tme: "06:30"')],
        20,
        "slots[0].time",
        "required field is missing",
        id="missing-field",
    ),
    pytest.param(
        [("{id: loa-2, name: Loa 2}", "{id: loa-1, name: Loa 2}")],
        10,
        "zones[1].nodes[0].id",
        'node "loa-1" is already in zone "tdp-1" (line 6)',
        id="node-in-two-zones",
    ),
    pytest.param(
        [("    text: Kính thưa", '    text: ""\n    x: Kính thưa')],
        18,
        "bulletins[0].text",
        "the text is empty",
        id="empty-text",
    ),
    pytest.param(
        [("    text: Kính thưa bà con!", "    text: " + "a" * 20_001 + " Kính")],
        18,
        "bulletins[0].text",
        "the text is 20,055 characters long; the limit is 20,000",
        id="long-text",
    ),
    pytest.param(
        [('time: "06:30"', 'time: "25:00"')],
        22,
        "slots[0].time",
        '"25:00" is not a valid time (HH:MM)',
        id="impossible-time",
    ),
    pytest.param(
        [("until: 2024-06-30", "until: 2024-02-01")],
        25,
        "slots[0].until",
        "2024-02-01 is before from: 2024-03-01",
        id="from-after-until",
    ),
    pytest.param(
        [("days: [mon, fri]", "days: [mon, fry]")],
        23,
        "slots[0].days",
        '"fry" is not a weekday',
        id="bad-weekday",
    ),
    pytest.param(
        [("priority: normal", "priority: urgent")],
        26,
        "slots[0].priority",
        '"urgent" is not a priority',
        id="bad-priority",
    ),
    pytest.param(
        [("from: 2024-03-01", "from: 2024-02-30")],
        24,
        "slots[0].from",
        '"2024-02-30" is not a valid date',
        id="bad-date",
    ),
    pytest.param(
        [("    approved: true", "    approvd: true")],
        17,
        "bulletins[0].approvd",
        "unknown field (did you mean approved?)",
        id="unknown-field",
    ),
    pytest.param(
        [("    approved: true", "    title: Lại")],
        17,
        "bulletins[0].title",
        "duplicate key (first at line 16)",
        id="duplicate-key",
    ),
    pytest.param(
        [("    zones: [tdp-1]", "    zones: []")],
        27,
        "slots[0].zones",
        "write all (the whole ward) or a list of zone ids",
        id="empty-zones",
    ),
    pytest.param(
        [("  - id: b1", "  - id: Bản tin 1")], 14, "bulletins[0].id", "is not a valid id", id="bad-id"
    ),
    pytest.param(
        [("timezone: Asia/Ho_Chi_Minh", "timezone: Asia/Hanoi")],
        1,
        "site.timezone",
        '"Asia/Hanoi" is not a known time zone',
        id="bad-timezone",
    ),
]


@pytest.mark.parametrize(("replacements", "line", "field", "detail"), BAD_CASES)
def test_bad_input_names_file_line_field_and_changes_nothing(
    factory: sessionmaker[Session],
    tmp_path: Path,
    replacements: list[tuple[str, str]],
    line: int,
    field: str,
    detail: str,
) -> None:
    """Each kind of bad input is reported as file:line: field: detail and the database stays as it was."""
    load_programme(DEMO, factory)
    before = dump(factory)
    path = write(tmp_path, edit(MINI, *replacements))
    with pytest.raises(ScheduleFileError) as exc:
        load_programme(path, factory)
    expected = f"{path}:{line}: {field}: "
    assert any(p.startswith(expected) and detail in p for p in problems(exc)), problems(exc)
    assert dump(factory) == before


@pytest.mark.parametrize(
    ("text", "line", "detail"),
    [
        pytest.param(
            edit(MINI, ("days: [mon, fri]", "days: [mon, fri")),
            24,
            "while parsing a flow sequence at line 23: expected ',' or ']'",
            id="unclosed-bracket",
        ),
        pytest.param(edit(MINI, ("    segment: cds", "\tsegment: cds")), 15, "'\\t'", id="tab"),
        pytest.param(
            edit(MINI, ("    name: Tổ dân phố số 2", "   name: Tổ dân phố số 2")),
            8,
            "expected <block end>",
            id="bad-indent",
        ),
    ],
)
def test_malformed_yaml_is_a_syntax_error_with_line(
    factory: sessionmaker[Session], tmp_path: Path, text: str, line: int, detail: str
) -> None:
    """Malformed YAML gives one file:line: YAML syntax error message and writes nothing."""
    before = dump(factory)
    path = write(tmp_path, text)
    with pytest.raises(ScheduleFileError) as exc:
        load_programme(path, factory)
    [message] = problems(exc)
    assert message.startswith(f"{path}:{line}: YAML syntax error: ") and detail in message, message
    assert dump(factory) == before


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    """Several mistakes in one file are all listed, in file order, not just the first."""
    path = write(
        tmp_path,
        edit(
            MINI,
            ("    segment: cds", "    segment: cdx"),
            ('time: "06:30"', 'time: "6.30"'),
            ("until: 2024-06-30", "until: 2024-02-01"),
            ("priority: normal", "priority: urgent"),
            ("zones: [tdp-1]", "zones: [tdp-7]"),
            ("play: [b1]", "play: [b2]"),
        ),
    )
    with pytest.raises(ScheduleFileError) as exc:
        parse_programme(path)
    lines = [int(re.match(rf"{re.escape(str(path))}:(\d+): ", p).group(1)) for p in problems(exc)]  # type: ignore[union-attr]
    assert lines == [15, 22, 25, 26, 27, 28]
    assert str(exc.value) == "\n".join(problems(exc))


def test_missing_and_empty_files_are_reported(tmp_path: Path) -> None:
    """A missing file, an empty file and a non-mapping top level each give a clear message."""
    with pytest.raises(ScheduleFileError, match="cannot read the file"):
        parse_programme(tmp_path / "nope.yaml")
    with pytest.raises(ScheduleFileError, match=r":1: the file is empty"):
        parse_programme(write(tmp_path, "# only a comment\n"))
    with pytest.raises(ScheduleFileError, match=r":1: the top level must be a mapping"):
        parse_programme(write(tmp_path, "- tdp-1\n"))
    with pytest.raises(ScheduleFileError, match=r":2: zone: unknown section \(did you mean zones\?\)"):
        parse_programme(write(tmp_path, "site: {name: X}\nzone: []\n"))


def test_server_timezone_must_match_site_timezone(tmp_path: Path) -> None:
    """When the caller passes the server's time zone, a different site.timezone is an error."""
    path = write(tmp_path, edit(MINI, ("timezone: Asia/Ho_Chi_Minh", "timezone: Asia/Bangkok")))
    parse_programme(path)
    with pytest.raises(ScheduleFileError, match=r':1: site.timezone: "Asia/Bangkok" differs'):
        parse_programme(path, timezone=SITE_TZ)


def test_failure_while_writing_rolls_everything_back(
    factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error half-way through writing leaves no zone, node or bulletin of the file behind."""
    load_programme(DEMO, factory)
    before = dump(factory)

    def boom(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "_write_slot", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        load_programme(write(tmp_path, MINI), factory)
    assert dump(factory) == before


# --------------------------------------------------------------------------- accepted spellings


def test_officer_friendly_spellings_are_accepted(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Vietnamese priority and weekday names, 'hằng ngày', DD/MM/YYYY dates and unquoted 17:00 all load."""
    path = write(
        tmp_path,
        edit(
            MINI,
            ('time: "06:30"', "time: 17:00"),
            ("days: [mon, fri]", "days: [t2, Thứ 6, CN]"),
            ("from: 2024-03-01", "from: 1/3/2024"),
            ("priority: normal", "priority: Khẩn cấp"),
        )
        + "  - {id: s2, name: Hằng ngày, time: '05:45', days: hằng ngày, priority: ưu tiên,\n"
        + "     zones: all, play: [b1]}\n",
    )
    load_programme(path, factory)
    with factory() as session:
        s1, s2 = session.get(Slot, "s1"), session.get(Slot, "s2")
        assert s1 is not None and s2 is not None
        assert (s1.start_time, s1.weekdays, s1.valid_from, s1.priority) == (
            dt.time(17),
            "mon,fri,sun",
            dt.date(2024, 3, 1),
            "emergency",
        )
        assert (s2.weekdays, s2.priority, s2.zone_ids) == ("", "priority", [])


# --------------------------------------------------------------------------- upsert rules


def set_status(factory: sessionmaker[Session], bulletin_id: str, status: str) -> None:
    with transaction(factory) as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None
        bulletin.status = status


def status(factory: sessionmaker[Session], bulletin_id: str) -> str:
    with factory() as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None
        return bulletin.status


def test_changed_text_goes_back_to_draft(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A bulletin whose text changed and that the file does not approve becomes a draft again."""
    load_programme(write(tmp_path, MINI), factory)
    changed = edit(MINI, ("    approved: true\n", ""), ("hồ sơ TTHC", "hồ sơ thủ tục hành chính"))
    report = load_programme(write(tmp_path, changed), factory)
    assert status(factory, "b1") == BulletinStatus.DRAFT
    assert report.back_to_draft == ["b1"]
    assert counts(report)["bulletins"] == (0, 1, 0)


def test_changed_text_marked_approved_stays_approved(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A changed text with approved: true is stored approved."""
    load_programme(write(tmp_path, MINI), factory)
    report = load_programme(write(tmp_path, edit(MINI, ("hồ sơ TTHC", "hồ sơ thủ tục"))), factory)
    assert status(factory, "b1") == BulletinStatus.APPROVED
    assert report.back_to_draft == []


def test_unchanged_text_keeps_status_set_elsewhere(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Without an approved field and with the same text, a status set in the web UI is kept."""
    unmarked = write(tmp_path, edit(MINI, ("    approved: true\n", "")))
    load_programme(unmarked, factory)
    assert status(factory, "b1") == BulletinStatus.DRAFT
    set_status(factory, "b1", BulletinStatus.APPROVED)
    assert not load_programme(unmarked, factory).changed
    assert status(factory, "b1") == BulletinStatus.APPROVED


def test_approved_false_withdraws_approval(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """approved: false puts an approved bulletin back to draft even when its text is unchanged."""
    load_programme(write(tmp_path, MINI), factory)
    load_programme(write(tmp_path, edit(MINI, ("approved: true", "approved: false"))), factory)
    assert status(factory, "b1") == BulletinStatus.DRAFT


def test_rows_not_in_the_file_are_left_alone(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Loading a smaller file keeps the demo's other rows, and node runtime state is never reset."""
    load_programme(DEMO, factory)
    with transaction(factory) as session:
        node = session.get(Node, "loa-tdp1-a")
        assert node is not None
        node.online, node.session = True, 7
    before = dump(factory)
    mini = edit(MINI, ("{id: loa-1,", "{id: loa-tdp1-a,"))
    report = load_programme(write(tmp_path, mini), factory)
    assert counts(report)["zones"] == (0, 0, 2)
    assert counts(report)["nodes"] == (1, 1, 0)  # loa-tdp1-a renamed, loa-2 new
    after = dump(factory)
    assert len(after["slots"]) == len(before["slots"]) + 1
    assert len(after["bulletins"]) == len(before["bulletins"]) + 1
    with factory() as session:
        node = session.get(Node, "loa-tdp1-a")
        assert node is not None and (node.online, node.session, node.name) == (True, 7, "Loa 1")
        assert session.get(Slot, "sang-ngay-thuong") is not None


def test_slot_playlist_and_targets_are_replaced(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A slot's playlist order and zones follow the file, and the slot counts as updated once."""
    two = edit(MINI, ("slots:\n", "  - {id: b2, title: Hai, approved: true, text: Bản tin hai.}\nslots:\n"))
    load_programme(write(tmp_path, edit(two, ("play: [b1]", "play: [b1, b2]"))), factory)
    report = load_programme(
        write(
            tmp_path, edit(two, ("play: [b1]", "play: [b2, b1, b2]"), ("zones: [tdp-1]", "zones: [tdp-2]"))
        ),
        factory,
    )
    assert counts(report)["slots"] == (0, 1, 0)
    with factory() as session:
        slot = session.get(Slot, "s1")
        assert slot is not None
        assert [item.bulletin_id for item in slot.items] == ["b2", "b1", "b2"]
        assert slot.zone_ids == ["tdp-2"]


# --------------------------------------------------------------------------- export


def test_export_round_trips_the_demo(
    factory: sessionmaker[Session], other_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Export then load gives the same state: no change in the same database, equal rows in a fresh one."""
    load_programme(DEMO, factory)
    exported = write(
        tmp_path, export_programme(factory, site=SiteSpec(name="Phường Thọ Xương")), "export.yaml"
    )
    assert not load_programme(exported, factory).changed
    load_programme(exported, other_factory)
    skip = frozenset({"bulletins.updated_at"})
    assert dump(other_factory, skip=skip) == dump(factory, skip=skip)


FEATURES = """\
zones:
  - {id: tdp-1, name: Tổ 1, nodes: [{id: loa-1, name: Loa 1}]}
  - {id: tdp-2, name: Tổ 2}
segments:
  - {id: cds, name: Chuyển đổi số}
bulletins:
  - {id: tts, title: Có giọng đọc, text: "Dòng một.\\n\\nDòng hai: 7h30, 99%.", engine: gtts, voice: vi,
     rate: 160,
     approved: true}
  - {id: rec, title: Bản ghi âm, audio: AUDIO, approved: false}
  - {id: nop, title: Chờ duyệt, segment: cds, text: Đang chờ duyệt.}
slots:
  - {id: daily, name: Hằng ngày, time: "05:00:30", days: daily, play: [tts]}
  - {id: daily-dates, name: Hằng ngày và ngày lẻ, time: "05:00", days: daily, every_weeks: 3,
     dates: [2024-05-04], play: [tts]}
  - {id: one-off, name: Ngày lẻ, time: "19:00", dates: [2024-10-19, 2024-09-30], except: [2024-09-30],
     holidays: skip, priority: emergency, zones: [tdp-2, tdp-1], enabled: false, play: [rec, nop]}
""".replace("AUDIO", "ab" * 32)


def test_export_round_trips_every_field(
    factory: sessionmaker[Session], other_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Seconds, daily, daily+dates, dates-only, voices, audio, disabled slots and "submitted" round-trip."""
    load_programme(write(tmp_path, FEATURES), factory)
    set_status(factory, "nop", BulletinStatus.SUBMITTED)
    text = export_programme(factory)
    exported = write(tmp_path, text, "export.yaml")
    assert not load_programme(exported, factory).changed
    assert status(factory, "nop") == BulletinStatus.SUBMITTED
    load_programme(exported, other_factory)
    skip = frozenset({"bulletins.updated_at"})
    expected = dump(factory, skip=skip)
    # "submitted" is a workflow state of the web UI: a fresh database gets the file's draft.
    expected["bulletins"] = sorted(
        (tuple("draft" if value == "submitted" else value for value in row) for row in expected["bulletins"]),
        key=repr,
    )
    assert dump(other_factory, skip=skip) == expected
    with factory() as session:
        stored = {
            s.id: (s.weekdays, SlotRule.from_slot(s).one_off_only) for s in session.scalars(select(Slot))
        }
    assert stored == {
        "daily": ("", False),
        "daily-dates": ("mon,tue,wed,thu,fri,sat,sun", False),
        "one-off": ("", True),
    }
    assert 'time: "05:00:30"' in text and "days: daily" in text


def test_export_without_site_omits_site_block(factory: sessionmaker[Session]) -> None:
    """The database stores no site name, so export writes the site block only when given one."""
    load_programme(DEMO, factory)
    assert "\nsite:" not in export_programme(factory)
    assert "site: {name: Phường Thọ Xương" in export_programme(
        factory, site=SiteSpec(name="Phường Thọ Xương")
    )
