"""Programme files: parsing with file:line messages, all-or-nothing idempotent loading, programme rules,
groups, audio assets, relays and durations, export round trip."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.db import make_engine, migrate, session_factory, transaction
from radio.errors import ScheduleFileError
from radio.models import AudioAsset, Base, Bulletin, BulletinStatus, ItemKind, Node, NodeGroup, Slot, SlotItem
from radio.schedule import loader
from radio.schedule.loader import LoadReport, SiteSpec, export_programme, load_programme, parse_programme
from radio.schedule.recurrence import SlotRule, next_occurrence
from radio.settings import Settings, load_settings
from radio.sound.store import AudioStore

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


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Loads without explicit settings keep their audio under the test's own directory."""
    monkeypatch.setenv("RADIO_DATA_DIR", str(tmp_path / "data"))
    for name in ("RADIO_QUIET_HOURS", "RADIO_SESSION_MAX_MINUTES", "RADIO_SESSIONS_PER_DAY", "RADIO_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"


@pytest.fixture
def radio_settings(data_dir: Path) -> Settings:
    return load_settings(data_dir=data_dir)


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
    """Every row of every table, in a stable order; ``skip`` names "table.column" to leave out.

    The audit trail is a log of how the state came about, not the state: it is left out.
    """
    out: dict[str, list[tuple[Any, ...]]] = {}
    with factory() as session:
        for table in Base.metadata.sorted_tables:
            if table.name.startswith("audit_"):
                continue
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
    """The Thọ Xương demo creates 6 TDPs, their nodes offline, a group, 5 segments, the jingle, 11 bulletins
    and 10 slots."""
    report = load_programme(DEMO, factory, timezone=SITE_TZ)
    assert counts(report) == {
        "zones": (6, 0, 0),
        "nodes": (9, 0, 0),
        "groups": (1, 0, 0),
        "segments": (5, 0, 0),
        "assets": (1, 0, 0),
        "bulletins": (11, 0, 0),
        "slots": (10, 0, 0),
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
    relay = slots["tiep-am-dai-thanh-pho"]
    assert relay.segment == "tiep-am" and relay.time == dt.time(18)
    assert [(i.relay, i.relay_s) for i in relay.play if isinstance(i, loader.RelayItemSpec)] == [
        ("http://127.0.0.1:8000/stream/dai-thanh-pho", 900)
    ]
    market = slots["khu-cho-cuoi-tuan"]
    assert market.groups == ("loa-khu-cho",) and market.zones is None
    assert market.play[0] == loader.AudioItemSpec(audio="nhac-hieu")
    [group] = programme.groups
    assert len(group.nodes) == 2 and group.nodes[0][:8] != group.nodes[1][:8]  # two TDPs
    assert [(a.id, a.file) for a in programme.assets] == [("nhac-hieu", "../audio/chime.wav")]
    assert (slots["nhac-lich-mot-cua"].zones, slots["nhac-lich-mot-cua"].time) == (("tdp-1", "tdp-2"), dt.time(11))


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
        'không tìm thấy tổ dân phố "tdp-9"',
        id="unknown-zone",
    ),
    pytest.param(
        [("play: [b1]", "play: [b1, b9]")],
        28,
        "slots[0].play[1]",
        'không tìm thấy bản tin "b9"',
        id="unknown-bulletin",
    ),
    pytest.param(
        [("    segment: cds", "    segment: cdx")],
        15,
        "bulletins[0].segment",
        'không tìm thấy chuyên mục "cdx" (có phải ý bạn là cds?)',
        id="unknown-segment",
    ),
    pytest.param(
        [("  - id: tdp-2", "  - id: tdp-1")],
        7,
        "zones[1].id",
        'mã tổ dân phố "tdp-1" bị trùng (đã có ở dòng 3)',
        id="duplicate-zone",
    ),
    pytest.param(
        [('time: "06:30"', 'tme: "06:30"')],
        20,
        "slots[0].time",
        "thiếu trường bắt buộc",
        id="missing-field",
    ),
    pytest.param(
        [("{id: loa-2, name: Loa 2}", "{id: loa-1, name: Loa 2}")],
        10,
        "zones[1].nodes[0].id",
        'cụm loa "loa-1" đã thuộc tổ dân phố "tdp-1" (dòng 6)',
        id="node-in-two-zones",
    ),
    pytest.param(
        [("    text: Kính thưa", '    text: ""\n    x: Kính thưa')],
        18,
        "bulletins[0].text",
        "nội dung bản tin trống",
        id="empty-text",
    ),
    pytest.param(
        [("    text: Kính thưa bà con!", "    text: " + "a" * 20_001 + " Kính")],
        18,
        "bulletins[0].text",
        "nội dung dài 20.055 ký tự; tối đa 20.000 ký tự",
        id="long-text",
    ),
    pytest.param(
        [('time: "06:30"', 'time: "25:00"')],
        22,
        "slots[0].time",
        'giờ "25:00" không hợp lệ (dạng HH:MM, ví dụ 06:30)',
        id="impossible-time",
    ),
    pytest.param(
        [("until: 2024-06-30", "until: 2024-02-01")],
        25,
        "slots[0].until",
        "2024-02-01 trước ngày bắt đầu (from: 2024-03-01)",
        id="from-after-until",
    ),
    pytest.param(
        [("days: [mon, fri]", "days: [mon, fry]")],
        23,
        "slots[0].days",
        '"fry" không phải là thứ trong tuần',
        id="bad-weekday",
    ),
    pytest.param(
        [("priority: normal", "priority: urgent")],
        26,
        "slots[0].priority",
        '"urgent" không phải là mức ưu tiên',
        id="bad-priority",
    ),
    pytest.param(
        [("from: 2024-03-01", "from: 2024-02-30")],
        24,
        "slots[0].from",
        'ngày "2024-02-30" không hợp lệ',
        id="bad-date",
    ),
    pytest.param(
        [("    approved: true", "    approvd: true")],
        17,
        "bulletins[0].approvd",
        "không có trường này (có phải ý bạn là approved?)",
        id="unknown-field",
    ),
    pytest.param(
        [("    approved: true", "    title: Lại")],
        17,
        "bulletins[0].title",
        "khoá bị lặp (đã có ở dòng 16)",
        id="duplicate-key",
    ),
    pytest.param(
        [("    zones: [tdp-1]", "    zones: []")],
        27,
        "slots[0].zones",
        "ghi all (toàn phường) hoặc danh sách mã tổ dân phố",
        id="empty-zones",
    ),
    pytest.param(
        [("  - id: b1", "  - id: Bản tin 1")], 14, "bulletins[0].id", "mã \"Bản tin 1\" không hợp lệ", id="bad-id"
    ),
    pytest.param(
        [("timezone: Asia/Ho_Chi_Minh", "timezone: Asia/Hanoi")],
        1,
        "site.timezone",
        '"Asia/Hanoi" không phải là múi giờ hợp lệ',
        id="bad-timezone",
    ),
    # play items, targets, durations, groups and assets
    pytest.param(
        [("play: [b1]", 'play: [b1, {relay: "ftp://x/y", minutes: 5}]')],
        28,
        "slots[0].play[1].relay",
        '"ftp://x/y" không phải là địa chỉ luồng http:// hoặc https://',
        id="relay-not-http",
    ),
    pytest.param(
        [("play: [b1]", "play: [b1, {relay: 'http://x/y', minutes: 0}]")],
        28,
        "slots[0].play[1].minutes",
        "phải lớn hơn 0 (đang ghi 0)",
        id="relay-zero-minutes",
    ),
    pytest.param(
        [("play: [b1]", "play: [b1, {relay: 'http://x/y', minutes: 361}]")],
        28,
        "slots[0].play[1].minutes",
        "không được quá 360 (đang ghi 361)",
        id="relay-too-long",
    ),
    pytest.param(
        [("play: [b1]", "play: [b1, {relay: 'http://x/y'}]")],
        28,
        "slots[0].play[1]",
        "ghi thời gian tiếp âm: minutes: N hoặc seconds: N",
        id="relay-without-length",
    ),
    pytest.param(
        [("play: [b1]", "play: [b1, {video: x}]")],
        28,
        "slots[0].play[1]",
        "ghi mã bản tin, tệp âm thanh dạng audio: <mã>, hoặc tiếp âm dạng relay: <URL> kèm minutes: <N>",
        id="unknown-play-item",
    ),
    pytest.param(
        [("play: [b1]", "play: [b1, {audio: nhac}]")],
        28,
        "slots[0].play[1].audio",
        'không tìm thấy tệp âm thanh "nhac"',
        id="unknown-asset",
    ),
    pytest.param(
        [("    zones: [tdp-1]", "    zones: [tdp-1]\n    duration: 15x")],
        28,
        "slots[0].duration",
        '"15x" không phải là thời lượng (ghi ví dụ "15m", "90s", "1h30m", "15 phút", hoặc một số phút)',
        id="bad-duration",
    ),
    pytest.param(
        [("    zones: [tdp-1]", "    zones: [tdp-1]\n    duration: 400")],
        28,
        "slots[0].duration",
        "thời lượng 400 phải lớn hơn 0 và không quá 360 phút",
        id="duration-out-of-range",
    ),
    pytest.param(
        [("    zones: [tdp-1]\n", "")],
        20,
        "slots[0]",
        "hãy chọn zones hoặc groups: zones (danh sách mã tổ dân phố, hoặc all cho toàn phường)",
        id="no-targets",
    ),
    pytest.param(
        [("until: 2024-06-30", "until: 2024-06-30\n    except: [31/12/9999]")],
        26,
        "slots[0].except",
        'ngày "31/12/9999" nằm ngoài khoảng năm 2000–2100',
        id="except-year-9999",
    ),
    pytest.param(
        [("from: 2024-03-01", "from: 0001-01-01")],
        24,
        "slots[0].from",
        'ngày "0001-01-01" nằm ngoài khoảng năm 2000–2100',
        id="from-year-1",
    ),
    pytest.param(
        [("until: 2024-06-30", "until: 9999-12-31")],
        25,
        "slots[0].until",
        'ngày "9999-12-31" nằm ngoài khoảng năm 2000–2100',
        id="until-year-9999",
    ),
    pytest.param(
        [("until: 2024-06-30", "until: 2024-06-30\n    dates: [2024-05-01, 2101-01-01]")],
        26,
        "slots[0].dates",
        'ngày "2101-01-01" nằm ngoài khoảng năm 2000–2100',
        id="dates-after-2100",
    ),
    pytest.param(
        [("    days: [mon, fri]\n", "")],
        20,
        "slots[0]",
        "ghi days (daily hoặc danh sách các thứ) hoặc dates (các ngày phát lẻ), hoặc cả hai",
        id="no-days-nor-dates",
    ),
    pytest.param(
        [("until: 2024-06-30", "until: 2024-02-01")],
        25,
        "slots[0].until",
        "2024-02-01 trước ngày bắt đầu (from: 2024-03-01)",
        id="until-before-from",
    ),
    pytest.param(
        [("    zones: [tdp-1]", "    groups: [g9]")],
        27,
        "slots[0].groups[0]",
        'không tìm thấy nhóm loa "g9"',
        id="unknown-group",
    ),
    pytest.param(
        [("segments:\n", "groups:\n  - {id: g1, name: G, nodes: [loa-1]}\nsegments:\n"),
         ("    zones: [tdp-1]", "    zones: all\n    groups: [g1]")],
        30,
        "slots[0].groups",
        "zones: all đã gồm mọi cụm loa của phường",
        id="all-and-groups",
    ),
    pytest.param(
        [("segments:\n", "groups:\n  - {id: g1, name: G, nodes: [loa-1, loa-9]}\nsegments:\n")],
        12,
        "groups[0].nodes[1]",
        'không tìm thấy cụm loa "loa-9"',
        id="group-unknown-node",
    ),
    pytest.param(
        [("segments:\n", "groups:\n  - {id: g1, name: G, nodes: []}\nsegments:\n")],
        12,
        "groups[0].nodes",
        "cần ít nhất một mã cụm loa",
        id="group-without-nodes",
    ),
    pytest.param(
        [("bulletins:\n", "assets:\n  - {id: a1, name: A, file: nope.wav}\nbulletins:\n")],
        14,
        "assets[0].file",
        'không đọc được "nope.wav": không có tệp này',
        id="asset-file-missing",
    ),
    pytest.param(
        [("bulletins:\n", "assets:\n  - {id: a1, name: A}\nbulletins:\n")],
        14,
        "assets[0]",
        "ghi file: (tệp âm thanh, đường dẫn tính từ tệp này) hoặc sha256: (bản thu đã có trong kho)",
        id="asset-without-audio",
    ),
    pytest.param(
        [("bulletins:\n", "assets:\n  - {id: a1, name: A, sha256: abc}\nbulletins:\n")],
        14,
        "assets[0].sha256",
        "sha256 phải gồm 64 ký tự hệ 16 viết thường (0–9, a–f)",
        id="asset-bad-sha256",
    ),
    pytest.param(
        [("bulletins:\n", f"assets:\n  - {{id: a1, name: A, sha256: {'cd' * 32}}}\nbulletins:\n")],
        14,
        "assets[0].sha256",
        "kho âm thanh không có bản thu nào có sha256 này",
        id="asset-not-stored",
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
            "trong danh sách [ … ] bắt đầu ở dòng 23: thiếu ',' hoặc ']'",
            id="unclosed-bracket",
        ),
        pytest.param(edit(MINI, ("    segment: cds", "\tsegment: cds")), 15, "có ký tự tab ('\\t')", id="tab"),
        pytest.param(
            edit(MINI, ("    name: Tổ dân phố số 2", "   name: Tổ dân phố số 2")),
            8,
            "thụt lề không khớp",
            id="bad-indent",
        ),
    ],
)
def test_malformed_yaml_is_a_syntax_error_with_line(
    factory: sessionmaker[Session], tmp_path: Path, text: str, line: int, detail: str
) -> None:
    """Malformed YAML gives one file:line: lỗi cú pháp YAML message and writes nothing."""
    before = dump(factory)
    path = write(tmp_path, text)
    with pytest.raises(ScheduleFileError) as exc:
        load_programme(path, factory)
    [message] = problems(exc)
    assert message.startswith(f"{path}:{line}: lỗi cú pháp YAML: ") and detail in message, message
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
    with pytest.raises(ScheduleFileError, match="nope.yaml: không đọc được tệp: không có tệp này"):
        parse_programme(tmp_path / "nope.yaml")
    with pytest.raises(ScheduleFileError, match=r":1: tệp trống"):
        parse_programme(write(tmp_path, "# only a comment\n"))
    with pytest.raises(ScheduleFileError, match=r":1: cấp ngoài cùng phải gồm các phần dạng khoá: giá trị"):
        parse_programme(write(tmp_path, "- tdp-1\n"))
    with pytest.raises(ScheduleFileError, match=r":2: zone: không có phần này \(có phải ý bạn là zones\?\)"):
        parse_programme(write(tmp_path, "site: {name: X}\nzone: []\n"))


def test_server_timezone_must_match_site_timezone(tmp_path: Path) -> None:
    """When the caller passes the server's time zone, a different site.timezone is an error."""
    path = write(tmp_path, edit(MINI, ("timezone: Asia/Ho_Chi_Minh", "timezone: Asia/Bangkok")))
    parse_programme(path)
    with pytest.raises(ScheduleFileError, match=r':1: site.timezone: "Asia/Bangkok" khác múi giờ của máy chủ'):
        parse_programme(path, timezone=SITE_TZ)


def test_failure_while_writing_rolls_everything_back(
    factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error half-way through writing leaves no zone, node or bulletin of the file behind."""
    load_programme(DEMO, factory)
    before = dump(factory)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "write_slot", boom)
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
        + "  - {id: s2, name: Hằng ngày, time: '06:45', days: hằng ngày, priority: ưu tiên,\n"
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
    skip = frozenset({"bulletins.updated_at", "audio_assets.created_at"})
    assert dump(other_factory, skip=skip) == dump(factory, skip=skip)


FEATURES = """\
zones:
  - {id: tdp-1, name: Tổ 1, nodes: [{id: loa-1, name: Loa 1}, {id: loa-1b, name: Loa 1b}]}
  - {id: tdp-2, name: Tổ 2, nodes: [{id: loa-2, name: Loa 2}]}
  - {id: tdp-3, name: Tổ 3}
groups:
  - {id: cho, name: Khu chợ, nodes: [loa-2, loa-1b]}
segments:
  - {id: cds, name: Chuyển đổi số}
assets:
  - {id: jingle, name: Nhạc hiệu, file: chime.wav}
bulletins:
  - {id: tts, title: Có giọng đọc, text: "Dòng một.\\n\\nDòng hai: 7h30, 99%.", engine: gtts, voice: vi,
     rate: 160,
     approved: true}
  - {id: rec, title: Bản ghi âm, audio: AUDIO, approved: false}
  - {id: nop, title: Chờ duyệt, segment: cds, text: Đang chờ duyệt.}
slots:
  - {id: daily, name: Hằng ngày, time: "06:00:30", days: daily, zones: all, play: [tts]}
  - {id: daily-dates, name: Hằng ngày và ngày lẻ, time: "06:10", days: daily, every_weeks: 3,
     dates: [2024-05-04], zones: all, play: [tts]}
  - {id: one-off, name: Ngày lẻ, time: "19:00", dates: [2024-10-19, 2024-09-30], except: [2024-09-30],
     holidays: skip, priority: emergency, zones: [tdp-2, tdp-1], enabled: false, play: [rec, nop]}
  - {id: market, name: Chợ, time: "09:00", days: [sat], zones: [tdp-3], groups: [cho], duration: "90s",
     play: [{audio: jingle}, tts, {relay: "https://radio.example.vn/live?kenh=1", seconds: 75}]}
  - {id: relay, name: Tiếp âm, time: "18:00", days: [mon], groups: [cho], duration: 20,
     play: [{relay: "http://127.0.0.1:8000/stream/dai-thanh-pho", minutes: 15}, {audio: jingle}]}
""".replace("AUDIO", "ab" * 32)
CHIME = REPO / "audio" / "chime.wav"


def test_export_round_trips_every_field(
    factory: sessionmaker[Session], other_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Seconds, daily, daily+dates, dates-only, voices, audio, disabled slots, "submitted", groups, assets,
    relays and durations round-trip."""
    path = write(tmp_path, FEATURES)
    shutil.copy(CHIME, path.parent / "chime.wav")
    load_programme(path, factory)
    set_status(factory, "nop", BulletinStatus.SUBMITTED)
    text = export_programme(factory)
    exported = write(tmp_path, text, "export.yaml")
    assert not load_programme(exported, factory).changed
    assert status(factory, "nop") == BulletinStatus.SUBMITTED
    load_programme(exported, other_factory)
    skip = frozenset({"bulletins.updated_at", "audio_assets.created_at"})
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
        "market": ("sat", False),
        "relay": ("mon", False),
    }
    assert 'time: "06:00:30"' in text and "days: daily" in text
    assert "groups: [cho]" in text and 'duration: "90s"' in text and 'duration: "20m"' in text
    assert "{audio: jingle}" in text and "seconds: 75}" in text and "minutes: 15}" in text
    assert re.search(r"- \{id: jingle, name: Nhạc hiệu, sha256: [0-9a-f]{64}\}", text), text


def test_export_without_site_omits_site_block(factory: sessionmaker[Session]) -> None:
    """The database stores no site name, so export writes the site block only when given one."""
    load_programme(DEMO, factory)
    assert "\nsite:" not in export_programme(factory)
    assert "site: {name: Phường Thọ Xương" in export_programme(
        factory, site=SiteSpec(name="Phường Thọ Xương")
    )


# --------------------------------------------------------------------------- programme rules at load

RULES = """\
zones:
  - {id: tdp-1, name: TDP 1, nodes: [{id: loa-1, name: Loa 1}]}
  - {id: tdp-2, name: TDP 2, nodes: [{id: loa-2, name: Loa 2}]}
bulletins:
  - {id: b1, title: Bản tin, approved: true, text: Kính thưa bà con.}
slots:
  - {id: chieu, name: Chiều, time: "17:00", days: daily, zones: [tdp-1], play: [b1]}
"""
DAY = r"(thứ (Hai|Ba|Tư|Năm|Sáu|Bảy)|Chủ nhật) \d\d/\d\d/\d{4}"


def refused(factory: sessionmaker[Session], path: Path, **kw: Any) -> list[str]:
    """Load a file that must be refused; returns its problems after checking the database did not move."""
    before = dump(factory)
    with pytest.raises(ScheduleFileError) as exc:
        load_programme(path, factory, **kw)
    assert dump(factory) == before
    return problems(exc)


def test_overlapping_slots_in_the_file_are_refused(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Two normal slots at 17:00 sharing TDP 1 are refused with file:line of one, naming both and the day."""
    path = write(tmp_path, RULES + '  - {id: trung, name: Trùng, time: "17:00", days: daily, zones: [tdp-1, tdp-2],'
                 " play: [b1]}\n")
    [message] = refused(factory, path)
    assert re.fullmatch(
        rf'{re.escape(str(path))}:8: slots\[1\]: Khung "trung" trùng giờ với khung "chieu" trên TDP 1 vào 17:00 '
        rf'{DAY}: "chieu" phát 17:00–17:00:\d\d, "trung" phát 17:00–17:00:\d\d \(cùng mức ưu tiên thông thường\)',
        message,
    ), message


def test_slot_clashing_with_a_stored_slot_is_refused(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A file slot overlapping a slot already in the database is refused, naming the stored slot."""
    load_programme(DEMO, factory)
    text = (
        "zones:\n  - id: tdp-1\n    name: Tổ dân phố số 1\n    nodes:\n"
        "      - {id: loa-tdp1-a, name: Cụm loa Nhà văn hóa TDP 1}\n"
        "bulletins:\n  - {id: b1, title: Bản tin, approved: true, text: Kính thưa bà con.}\n"
        'slots:\n  - {id: sang-tdp1, name: Sáng TDP 1, time: "06:31", days: [mon, tue, wed, thu, fri],'
        " zones: [tdp-1], play: [b1]}\n"
    )
    [message] = refused(factory, write(tmp_path, text))
    assert ':9: slots[0]: Khung "sang-tdp1" trùng giờ với khung "sang-ngay-thuong" trên Tổ dân phố số 1 vào 06:31' in message
    # A priority slot at the same time is not a conflict: it goes first at air time.
    load_programme(write(tmp_path, text.replace("zones: [tdp-1]", "priority: ưu tiên, zones: [tdp-1]")), factory)


def test_conflicts_only_between_stored_slots_do_not_block_a_load(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Two stored slots that already overlap are not the file's problem: an unrelated file still loads."""
    from radio.models import SlotTarget

    load_programme(DEMO, factory)
    with transaction(factory) as session:
        for ident in ("cu-1", "cu-2"):
            session.add(Slot(id=ident, name=ident, start_time=dt.time(12), weekdays="", interval_weeks=1,
                             priority="normal", targets=[SlotTarget(zone_id="tdp-6")],
                             items=[SlotItem(position=0, bulletin_id="nhac-lich-mot-cua")]))
    unrelated = RULES.replace("tdp-", "khu-").replace("loa-", "loa-khu-")
    load_programme(write(tmp_path, unrelated), factory)


def test_quiet_hours_refuse_a_4_30_slot(
    factory: sessionmaker[Session], tmp_path: Path, radio_settings: Settings
) -> None:
    """A normal slot at 04:30 breaks the quiet hours; emergency slots, disabled slots and a site without quiet
    hours are allowed."""
    early = RULES.replace('"17:00"', '"04:30"')
    [message] = refused(factory, write(tmp_path, early))
    assert re.fullmatch(rf".*:7: slots\[0\]: Vi phạm giờ yên tĩnh 21:30–06:00: phát lúc 04:30 {DAY}", message)
    load_programme(write(tmp_path, early.replace("zones: [tdp-1]", "enabled: false, zones: [tdp-1]")), factory)
    load_programme(write(tmp_path, early.replace("zones: [tdp-1]", "priority: khẩn cấp, zones: [tdp-1]")), factory)
    no_quiet = radio_settings.model_copy(update={"quiet_hours": "00:00-00:00"})
    load_programme(write(tmp_path, early), factory, settings=no_quiet)


def test_session_length_uses_planned_or_estimated_duration(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A planned 45-minute slot and a 40-minute relay without a planned length both break the 30-minute cap."""
    planned = RULES.replace("zones: [tdp-1]", "zones: [tdp-1], duration: 45m")
    [message] = refused(factory, write(tmp_path, planned))
    assert message.endswith(":7: slots[0]: Phiên phát dài 45 phút, vượt giới hạn 30 phút")
    relay = RULES.replace("play: [b1]", "play: [{relay: 'http://127.0.0.1:8000/s', minutes: 40}]")
    [message] = refused(factory, write(tmp_path, relay))
    assert message.endswith(": Phiên phát dài 40 phút (ước tính từ nội dung), vượt giới hạn 30 phút")


def test_sessions_per_day_cap_is_enforced(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A seventh daily session on TDP 2 is refused, naming the zone, the day and the cap."""
    extra = "".join(
        f'  - {{id: s{n}, name: S{n}, time: "{hour:02d}:00", days: daily, zones: [tdp-2], play: [b1]}}\n'
        for n, hour in enumerate((7, 8, 9, 10, 11, 12, 13))
    )
    [message] = refused(factory, write(tmp_path, RULES + extra))
    assert re.search(r":14: slots\[7\]: TDP 2 có 7 phiên trong ngày \d\d/\d\d/\d{4}, vượt giới hạn 6: 07:00 \"s0\"",
                     message), message
    load_programme(write(tmp_path, RULES + extra.replace("zones: [tdp-2]", "zones: [tdp-2], enabled: false", 1)),
                   factory)


def test_refused_load_keeps_only_unreferenced_audio(
    factory: sessionmaker[Session], tmp_path: Path, radio_settings: Settings
) -> None:
    """Assets are stored before the transaction: a refused load leaves the blob, but no asset row."""
    text = RULES.replace("slots:\n", "assets:\n  - {id: jingle, name: Nhạc hiệu, file: chime.wav}\nslots:\n")
    path = write(tmp_path, text.replace('"17:00"', '"04:30"'))
    shutil.copy(CHIME, path.parent / "chime.wav")
    refused(factory, path)
    with factory() as session:
        assert session.scalars(select(AudioAsset)).all() == []
    assert any(radio_settings.audio_dir.glob("*/*.mp3"))


# --------------------------------------------------------------------------- groups, assets, relays, durations


def test_groups_are_stored_and_follow_the_file(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A group's members are replaced by the file's list; a slot may target zones and groups together."""
    path = write(tmp_path, FEATURES)
    shutil.copy(CHIME, path.parent / "chime.wav")
    load_programme(path, factory)
    with factory() as session:
        group = session.get(NodeGroup, "cho")
        market = session.get(Slot, "market")
        assert group is not None and market is not None
        assert (group.name, group.node_ids) == ("Khu chợ", ["loa-1b", "loa-2"])
        assert (market.zone_ids, market.group_ids, market.whole_ward) == (["tdp-3"], ["cho"], False)
    report = load_programme(write(tmp_path, FEATURES.replace("nodes: [loa-2, loa-1b]", "nodes: [loa-1]")), factory)
    assert counts(report)["groups"] == (0, 1, 0)
    with factory() as session:
        group = session.get(NodeGroup, "cho")
        assert group is not None and group.node_ids == ["loa-1"]


def test_assets_are_checked_as_audio_and_stored(
    factory: sessionmaker[Session], tmp_path: Path, radio_settings: Settings
) -> None:
    """An asset file is stored by content with its duration; a text file is refused; reloading changes nothing."""
    path = write(tmp_path, FEATURES)
    shutil.copy(CHIME, path.parent / "chime.wav")
    load_programme(path, factory)
    with factory() as session:
        asset = session.get(AudioAsset, "jingle")
        assert asset is not None and asset.name == "Nhạc hiệu" and 1.0 < asset.duration_s < 2.5
        assert AudioStore(radio_settings.audio_dir).exists(asset.sha256)
    assert counts(load_programme(path, factory))["assets"] == (0, 0, 1)
    (path.parent / "notes.txt").write_text("không phải âm thanh", encoding="utf-8")
    bad = write(tmp_path, FEATURES.replace("file: chime.wav", "file: notes.txt"), "bad.yaml")
    [message] = refused(factory, bad)
    assert message.startswith(f'{bad}:10: assets[0].file: "notes.txt" không dùng được làm âm thanh: '
                              "không nhận ra định dạng âm thanh"), message


def test_audio_item_may_name_an_asset_already_in_the_database(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """{audio: id} may name an asset uploaded through the web (in the database), not only one of the file."""
    with transaction(factory) as session:
        session.add(AudioAsset(id="uploaded", name="Tải lên", sha256="ef" * 32, duration_s=12.5))
    load_programme(write(tmp_path, RULES.replace("play: [b1]", "play: [{audio: uploaded}, b1]")), factory)
    with factory() as session:
        chieu = session.get(Slot, "chieu")
        assert chieu is not None
        assert [(i.kind, i.asset_id, i.bulletin_id) for i in chieu.items] == [
            ("audio", "uploaded", None), ("bulletin", None, "b1")
        ]


def test_relays_and_durations_are_stored(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """A relay keeps its URL and length in seconds; a slot's planned duration is stored, an absent one is None."""
    path = write(tmp_path, FEATURES)
    shutil.copy(CHIME, path.parent / "chime.wav")
    load_programme(path, factory)
    with factory() as session:
        relay, market, daily = (session.get_one(Slot, ident) for ident in ("relay", "market", "daily"))
        assert [(i.kind, i.relay_url, i.relay_s) for i in relay.items] == [
            (ItemKind.RELAY, "http://127.0.0.1:8000/stream/dai-thanh-pho", 900.0), (ItemKind.AUDIO, None, None)
        ]
        assert market.items[2].relay_s == 75.0
        assert (relay.duration_s, market.duration_s, daily.duration_s) == (1200.0, 90.0, None)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("15m", 900), ("90s", 90), (2, 120), (1.5, 90), ("1h30m", 5400), ("15 phút", 900), ("90 giây", 90),
     ("1 giờ", 3600), ("2,5m", 150)],
)
def test_duration_spellings(tmp_path: Path, written: object, seconds: float) -> None:
    """Durations read as minutes when a number, or with h/m/s (giờ/phút/giây) units."""
    value = f'"{written}"' if isinstance(written, str) else written
    path = write(tmp_path, RULES.replace("zones: [tdp-1]", f"zones: [tdp-1], duration: {value}"))
    [slot] = parse_programme(path).slots
    assert slot.duration == seconds


def test_validate_slots_checks_candidates_against_the_database(
    factory: sessionmaker[Session], radio_settings: Settings
) -> None:
    """The API's check: a new slot clashing with a stored one, and a stored slot moved to 04:30, are reported."""
    from radio.models import SlotTarget
    from radio.schedule.planning import validate_slots

    load_programme(DEMO, factory)
    now = dt.datetime(2024, 12, 1, tzinfo=dt.UTC)
    with factory() as session:
        new = Slot(id="moi", name="Mới", start_time=dt.time(11, 0, 5), weekdays="tue", priority="normal",
                   targets=[SlotTarget(zone_id="tdp-2")], items=[SlotItem(position=0, bulletin_id="nhac-lich-mot-cua")])
        [conflict] = validate_slots(session, [new], radio_settings, now=now)
        assert (conflict.rule, conflict.slot_id, conflict.other_slot_id) == ("conflict", "moi", "nhac-lich-mot-cua")
        assert "trên Tổ dân phố số 2 vào 11:00:05 thứ Ba 03/12/2024" in conflict.message
        moved = session.get_one(Slot, "sang-ngay-thuong")
        moved.start_time = dt.time(4, 30)
        [quiet] = validate_slots(session, [moved], radio_settings, now=now)
        assert (quiet.rule, quiet.slot_id) == ("quiet_hours", "sang-ngay-thuong")
        assert quiet.message == "Vi phạm giờ yên tĩnh 21:30–06:00: phát lúc 04:30 thứ Hai 02/12/2024"
        session.rollback()


# --------------------------------------------------------------------------- hostile YAML


def alias_bomb(levels: int) -> str:
    """Each level repeats the previous one nine times: 9**levels values from a few lines."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append(f"zones: *a{levels}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [7, 9])
def test_an_alias_bomb_is_refused_quickly(tmp_path: Path, levels: int) -> None:
    """Nested YAML aliases that would expand to millions of values (7 levels once took 14 s and 1.28 GB) are
    refused within a moment, with a message naming the file."""
    path = write(tmp_path, alias_bomb(levels))
    started = time.monotonic()
    with pytest.raises(ScheduleFileError) as exc:
        parse_programme(path)
    assert time.monotonic() - started < 5
    [message] = problems(exc)
    assert message.startswith(f"{path}:1: tệp YAML bung ra hơn ") and "alias" in message, message


def test_aliases_within_the_budget_still_load(tmp_path: Path) -> None:
    """Ordinary aliases (a list of days written once, reused) are fine."""
    text = edit(MINI, ("days: [mon, fri]", "days: &weekdays [mon, fri]"))
    text += "  - {id: s2, name: Bản tin chiều, time: \"17:00\", days: *weekdays, zones: [tdp-2], play: [b1]}\n"
    programme = parse_programme(write(tmp_path, text))
    assert [slot.days for slot in programme.slots] == [("mon", "fri"), ("mon", "fri")]


@pytest.mark.parametrize(("written", "tag"), [
    ('!!python/object/apply:os.system ["echo pwned"]', "!!python/object/apply:os.system"),
    ("!!python/object:radio.models.Zone {id: x}", "!!python/object:radio.models.Zone"),
    ("!!python/name:os.system", "!!python/name:os.system"),
    ("!custom [a]", "!custom"),
])
def test_python_and_unknown_yaml_tags_are_refused(tmp_path: Path, written: str, tag: str) -> None:
    """A !!python/... (or any non-standard) tag is never constructed: the load is refused naming file, line and
    tag, quickly."""
    path = write(tmp_path, edit(MINI, ("    play: [b1]", f"    play: {written}")))
    started = time.monotonic()
    with pytest.raises(ScheduleFileError) as exc:
        parse_programme(path)
    assert time.monotonic() - started < 5
    assert f"{path}:28: slots[0].play: không được dùng thẻ YAML {tag} " in problems(exc)[0], problems(exc)


# --------------------------------------------------------------------------- per-item audit


def audit_rows(factory: sessionmaker[Session]) -> list[tuple[str, str | None, Any, Any]]:
    from radio.logbook.audit import AuditEntry

    with factory() as session:
        return [(e.action, e.entity_id, e.before, e.after)
                for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def test_each_loaded_slot_and_bulletin_is_audited_in_the_load_transaction(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A load audits every slot and bulletin it creates or changes (and each approval), with before and after,
    like the web console does; loading the same file again adds nothing; a refused load adds nothing either."""
    path = write(tmp_path, MINI)
    load_programme(path, factory, actor="r-officer")
    first = audit_rows(factory)
    assert [(action, ident) for action, ident, _, _ in first] == [
        ("bulletin.created", "b1"), ("bulletin.approved", "b1"), ("slot.created", "s1"),
        ("programme.loaded", "programme.yaml")]
    created = first[0]
    assert created[2] is None and created[3]["text"].startswith("Kính thưa") and created[3]["status"] == "approved"
    slot_after = first[2][3]
    assert slot_after["zone_ids"] == ["tdp-1"] and slot_after["start_time"] == "06:30"

    load_programme(path, factory, actor="r-officer")
    assert audit_rows(factory) == first  # nothing changed: no record at all

    path.write_text(edit(MINI, ("TTHC trực tuyến.", "TTHC trực tuyến từ tháng 3."), ('time: "06:30"', 'time: "06:45"'),
                         ("    approved: true\n", "")), encoding="utf-8")
    load_programme(path, factory, actor="r-officer")
    added = audit_rows(factory)[len(first):]
    assert [(action, ident) for action, ident, _, _ in added] == [
        ("bulletin.updated", "b1"), ("slot.updated", "s1"), ("programme.loaded", "programme.yaml")]
    bulletin_before, bulletin_after = added[0][2], added[0][3]
    assert (bulletin_before["status"], bulletin_after["status"]) == ("approved", "draft")
    assert bulletin_after["text"].endswith("từ tháng 3.")
    assert (added[1][2]["start_time"], added[1][3]["start_time"]) == ("06:30", "06:45")

    so_far = audit_rows(factory)
    clash = edit(MINI, ('time: "06:30"', 'time: "06:45"'), ("    until: 2024-06-30\n", ""))
    clash += "  - {id: s2, name: Trùng giờ, time: \"06:45\", days: [mon], from: 2024-03-01, zones: [tdp-1], play: [b1]}\n"
    path.write_text(clash, encoding="utf-8")
    with pytest.raises(ScheduleFileError):
        load_programme(path, factory, actor="r-officer")
    assert audit_rows(factory) == so_far  # all or nothing: the refused load left no audit record behind


# --------------------------------------------------------------------------- messages in Vietnamese


def test_pydantic_messages_come_out_in_vietnamese(tmp_path: Path) -> None:
    """pydantic's own errors (wrong type, bad literal, out of bounds, unknown field) are reported by type in
    Vietnamese, with what the file says; none of pydantic's English words get through."""
    text = edit(
        MINI,
        ("    name: Tổ dân phố số 1", "    name: 123"),
        ("    approved: true", "    approved: có lẽ\n    engine: festival\n    rate: 50"),
        ("    priority: normal", "    priority: normal\n    every_weeks: hai\n    holidays: nghỉ"),
    )
    path = write(tmp_path, text)
    with pytest.raises(ScheduleFileError) as exc:
        parse_programme(path)
    found = problems(exc)
    for expected in (
        f'{path}:4: zones[0].name: phải là chữ (một chuỗi ký tự) (đang ghi 123)',
        f'{path}:17: bulletins[0].approved: phải là true hoặc false (đang ghi "có lẽ")',
        f"{path}:18: bulletins[0].engine: phải là 'espeak' hoặc 'gtts' (đang ghi \"festival\")",
        f'{path}:19: bulletins[0].rate: phải từ 80 trở lên (đang ghi 50)',
        f'{path}:29: slots[0].every_weeks: phải là số nguyên (đang ghi "hai")',
        f"{path}:30: slots[0].holidays: phải là 'keep' hoặc 'skip' (đang ghi \"nghỉ\")",
    ):
        assert expected in found, found
    for english in ("Input should", "Field required", "Extra inputs", "got ", "valid", "unknown", "missing"):
        assert not any(english in problem for problem in found), found


def test_every_pydantic_type_the_loader_may_meet_has_a_vietnamese_text() -> None:
    """A built-in type without a text would reach the officer as "giá trị không hợp lệ" at best: the ones a
    programme file can trigger are all named, and their ctx placeholders are filled."""
    from radio.wording import PYDANTIC_VI, pydantic_vi

    for kind in ("missing", "extra_forbidden", "model_type", "string_type", "string_too_short", "string_too_long",
                 "int_parsing", "int_from_float", "float_parsing", "bool_parsing", "greater_than", "less_than_equal",
                 "literal_error", "list_type", "too_short"):
        assert kind in PYDANTIC_VI
    assert pydantic_vi({"type": "string_too_long", "ctx": {"max_length": 300}}) == "dài quá 300 ký tự"
    assert pydantic_vi({"type": "less_than_equal", "ctx": {"le": 360.0}}) == "không được quá 360"
    assert pydantic_vi({"type": "no_such_type", "msg": "Something"}) == "giá trị không hợp lệ"


def test_the_load_report_is_in_vietnamese(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """The summary names each table as officers call it: tạo / sửa / giữ nguyên, and bulletins back to draft."""
    report = load_programme(DEMO, factory)
    assert str(report).startswith("tổ dân phố: tạo 6, sửa 0, giữ nguyên 0; cụm loa: tạo 9, sửa 0, giữ nguyên 0; ")
    assert str(report).endswith("; bản tin: tạo 11, sửa 0, giữ nguyên 0; khung giờ: tạo 10, sửa 0, giữ nguyên 0")
    load_programme(write(tmp_path, MINI), factory)
    changed = edit(MINI, ("    approved: true\n", ""), ("hồ sơ TTHC", "hồ sơ thủ tục hành chính"))
    report = load_programme(write(tmp_path, changed), factory)
    assert str(report).endswith("; bản tin: tạo 0, sửa 1, giữ nguyên 0; khung giờ: tạo 0, sửa 0, giữ nguyên 1; "
                                "trở lại bản nháp, chờ duyệt lại (nội dung đã đổi): b1")


def test_a_file_that_is_not_utf8_or_not_a_list_is_explained(tmp_path: Path) -> None:
    """Latin-1 bytes, a section that is not a list and a '<<' merge key each get a Vietnamese message."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("zones: [{id: tdp-1, name: Tổ 1}]\n".encode("cp1258", errors="replace").replace(b"T", b"\xff"))
    with pytest.raises(ScheduleFileError, match=r"latin1.yaml:1: tệp không phải văn bản UTF-8"):
        parse_programme(path)
    with pytest.raises(ScheduleFileError, match=r":1: zones: phải là danh sách \(mỗi mục bắt đầu bằng '- '\)"):
        parse_programme(write(tmp_path, "zones: tdp-1\n"))
    merge = "base: &b {name: X}\nsite:\n  <<: *b\n"
    with pytest.raises(ScheduleFileError, match=r":3: site: chỉ dùng khoá thông thường \(không dùng '<<'"):
        parse_programme(write(tmp_path, merge))


@pytest.mark.parametrize(("change", "expected"), [
    ({"from": "2025-03-01", "until": "2025-02-01"}, "Đến ngày phải sau Từ ngày"),
    ({"days": None}, "hãy chọn thứ trong tuần hoặc ngày phát"),
    ({"zones": "all", "groups": ["g1"]}, "toàn phường không đi kèm nhóm loa"),
    ({"except": ["31/12/9999"]}, "Ngày nghỉ: ngày phải trong khoảng năm 2000–2100"),
    ({"name": ""}, "Tên: không được để trống"),
    ({"enabled": "có lẽ"}, "enabled: phải là true hoặc false"),
])
def test_the_consoles_form_errors_share_the_vietnamese_texts(change: dict[str, object], expected: str) -> None:
    """The web console shows SlotSpec's cross-field checks (slot_rule) and out-of-range dates (date_range) in its
    own words, and pydantic's types it has no words for in the shared ones (radio.wording.PYDANTIC_VI)."""
    from pydantic import ValidationError

    from radio.web.pages.common import validation_text

    slot = {"id": "s", "name": "S", "time": "06:30", "days": ["mon"], "zones": ["tdp-1"], "play": ["b1"]}
    body = {key: value for key, value in {**slot, **change}.items() if value is not None}
    with pytest.raises(ValidationError) as caught:
        loader.SlotSpec.model_validate(body)
    assert validation_text(caught.value.errors()) == expected
