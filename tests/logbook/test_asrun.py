"""The as-run log (per broadcast and per cluster, filtered and paged) and the scheduled-versus-aired reconciliation.

Data: radio.logbook.sample — two weeks of September 2024 with one of each outcome, inserted as rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from radio.cli import main
from radio.db import make_engine, migrate, session_factory, transaction
from radio.errors import InvalidInput
from radio.logbook import asrun, audit, sample
from radio.logbook.asrun import Category, Period

PERIOD = Period(sample.FIRST, sample.LAST, sample.TZ)


def seeded(url: str) -> tuple[Engine, sessionmaker[Session]]:
    engine = make_engine(url)
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        sample.seed(s)
    return engine, factory


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine, factory = seeded(db_url)
    yield factory
    engine.dispose()


@pytest.fixture
def sqlite_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine, factory = seeded(f"sqlite:///{tmp_path / 'asrun.db'}")
    yield factory
    engine.dispose()


def local(day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(2024, 9, day, hour, minute, tzinfo=sample.TZ)


def test_filters_and_paging(factory: sessionmaker[Session]) -> None:
    """Period, zone, segment, priority and outcome filters narrow the log; pages are disjoint and complete."""
    with factory() as s:
        everything = asrun.query(s, period=PERIOD, limit=1000)
        assert everything.total == 13 == len(everything.items)
        ids = []
        for offset in range(0, 13, 5):
            page = asrun.query(s, period=PERIOD, limit=5, offset=offset, newest_first=False)
            assert page.total == 13 and page.offset == offset
            ids += [b.id for b in page.items]
        assert ids == [b.id for b in sorted(everything.items, key=lambda b: (b.scheduled_at, b.id))]
        one_day = Period(dt.date(2024, 9, 11), dt.date(2024, 9, 11), sample.TZ)
        assert [b.title for b in asrun.query(s, period=one_day, newest_first=False).items] == [
            "Bản tin sáng ngày thường", "Thông báo khẩn: mưa lớn, ngập ngầm tràn"]
        assert asrun.query(s, period=PERIOD, segment="cqtt").total == 4
        assert asrun.query(s, period=PERIOD, priority="emergency").total == 1
        assert asrun.query(s, period=PERIOD, outcome="partial").total == 3
        assert asrun.query(s, period=PERIOD, outcome="not_aired").total == 1
        assert [b.scheduled_at for b in asrun.query(s, period=PERIOD, outcome="preempted").items] == [
            local(11, 6, 30)]
        # TDP 4 is reached by the whole-ward mornings (sent or not) and the Saturday slot, not by TDP 1–2's slot.
        tdp4 = asrun.query(s, period=PERIOD, zone="tdp-4", limit=100)
        assert tdp4.total == 8
        assert all(d.zone_id == "tdp-4" for b in tdp4.items for d in b.deliveries)
        assert {b.slot_id for b in tdp4.items} == {"sang-ngay-thuong", "toi-thu-bay"}
        # TDP 1 is reached by everything: 6 mornings sent, 2 whole-ward rows never sent (missed, not approved),
        # its 4 afternoons and the emergency.
        tdp1 = asrun.query(s, period=PERIOD, zone="tdp-1", limit=100)
        assert tdp1.total == 13 and {b.kind for b in tdp1.items} == {"scheduled", "emergency"}


def test_delivery_rows_carry_every_instant(factory: sessionmaker[Session]) -> None:
    """A finished delivery shows command issued and published, received, ready, started, finished and seconds."""
    with factory() as s:
        page = asrun.query(s, period=Period(dt.date(2024, 9, 4), dt.date(2024, 9, 4), sample.TZ))
    (b,) = page.items
    assert (b.status, b.status_vi, b.targeted, b.played_fully, b.coverage) == ("completed", "đã phát xong", 6, 6, 1.0)
    assert b.scheduled_at == local(4, 6, 30)
    d = b.deliveries[0]
    assert d.issued_at < d.published_at < d.received_at < d.ready_at < d.started_at < d.finished_at  # type: ignore[operator]
    assert d.played_s == sample.DURATION and d.expected_s == sample.DURATION and d.played_fully
    assert d.zone_name == "Tổ dân phố số 1" and d.node_name == "Cụm loa Nhà văn hóa TDP 1"


def test_coverage_counts_clusters_that_played_every_part(factory: sessionmaker[Session]) -> None:
    """13/09: bulletin + relay on 6 clusters; TDP 4 lost the relay after 12 s → 5/6, airtime 155 s."""
    with factory() as s:
        (b,) = asrun.query(s, period=Period(dt.date(2024, 9, 13), dt.date(2024, 9, 13), sample.TZ)).items
    assert len(b.deliveries) == 12 and {d.part for d in b.deliveries} == {0, 1}
    assert (b.targeted, b.played_fully) == (6, 5)
    assert b.coverage == pytest.approx(5 / 6)
    assert b.airtime_s == pytest.approx(sample.DURATION + sample.RELAY)
    lost = next(d for d in b.deliveries if d.node_id == "loa-tdp4-a" and d.part == 1)
    assert (lost.state, lost.reason, lost.expected_s, lost.played_fully) == ("failed", "mất luồng tiếp âm", 60.0, False)


def test_with_a_zone_only_its_clusters_count(factory: sessionmaker[Session]) -> None:
    """Filtered on TDP 1, the 11/09 morning shows TDP 1's two preempted clusters: 0/2."""
    with factory() as s:
        items = asrun.query(s, period=Period(dt.date(2024, 9, 11), dt.date(2024, 9, 11), sample.TZ), zone="tdp-1",
                            newest_first=False).items
    morning, emergency = items
    assert (morning.targeted, morning.played_fully, morning.preempted) == (2, 0, True)
    assert {d.reason for d in morning.deliveries} == {asrun.PREEMPTED}
    assert (emergency.kind, emergency.coverage) == ("emergency", 1.0)


def test_each_page_names_its_slots_and_nodes_from_plain_rows(factory: sessionmaker[Session]) -> None:
    """Page by page (one broadcast each), segments, nodes and zones are named right; only the page's
    broadcasts become ORM objects (a big site has 10,000 slots, 5,000 nodes and thousands of deliveries a page)."""
    from sqlalchemy import event

    from radio.models import Broadcast, Node, Segment, Slot, Zone

    with factory() as s:
        loaded: list[type] = []
        event.listen(s, "loaded_as_persistent", lambda _s, obj: loaded.append(type(obj)))
        items = [b for offset in range(13) for b in asrun.query(s, period=PERIOD, limit=1, offset=offset).items]
        assert set(loaded) == {Broadcast} and len(loaded) == 13
    with factory() as s:
        segments = {seg.id: seg.name for seg in s.scalars(select(Segment))}
        slots = {slot.id: slot.segment_id for slot in s.scalars(select(Slot))}
        nodes = {n.id: (n.name, n.zone_id) for n in s.scalars(select(Node))}
        zones = {z.id: z.name for z in s.scalars(select(Zone))}
    assert len({b.segment_id for b in items}) >= 2 and sum(len(b.deliveries) for b in items) > 50
    for b in items:
        assert b.segment_id == (slots[b.slot_id] if b.slot_id else None)
        assert b.segment_name == (segments[b.segment_id] if b.segment_id else None)
        for d in b.deliveries:
            assert (d.node_name, d.zone_id, d.zone_name) == (*nodes[d.node_id], zones[nodes[d.node_id][1]])
        assert [(d.node_id, d.part) for d in b.deliveries] == sorted((d.node_id, d.part) for d in b.deliveries)


def test_reports_name_every_slot_however_many(sqlite_factory: sessionmaker[Session],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_LIMIT slots (a year's report) the segments come from every slot instead of an IN list: same rows."""
    with sqlite_factory() as s:
        few = asrun.broadcasts_in(s, PERIOD)
        monkeypatch.setattr(asrun, "MAX_LIMIT", 1)
        many = asrun.broadcasts_in(s, PERIOD)
    assert many == few
    assert {b.segment_id for b in few if b.slot_id} == {"cds", "cqtt", "cchc"} and all(
        b.segment_name for b in few if b.slot_id)


EXPECTED = {
    (3, 17, 0): Category.AIRED, (4, 6, 30): Category.AIRED, (5, 6, 30): Category.PARTIAL,
    (5, 17, 0): Category.AIRED, (6, 6, 30): Category.MISSED, (7, 19, 0): Category.NOT_APPROVED,
    (9, 6, 30): Category.MISSED, (10, 6, 30): Category.AIRED, (10, 17, 0): Category.FAILED,
    (11, 6, 30): Category.PREEMPTED, (11, 6, 31): Category.AIRED, (12, 6, 30): Category.AIRED,
    (12, 17, 0): Category.AIRED, (13, 6, 30): Category.PARTIAL, (14, 19, 0): Category.FUTURE,
}


def test_reconciliation_classifies_every_occurrence(factory: sessionmaker[Session]) -> None:
    """Each planned occurrence gets its category; holidays are not planned; the emergency is listed as unplanned."""
    with factory() as s:
        result = asrun.reconcile(s, PERIOD, now=sample.NOW)
    got = {(r.scheduled_at.astimezone(sample.TZ).day, r.scheduled_at.astimezone(sample.TZ).hour,
            r.scheduled_at.astimezone(sample.TZ).minute): r.category for r in result.rows}
    assert got == EXPECTED
    assert local(2, 6, 30) not in [r.scheduled_at for r in result.rows]  # National Day: the slot skips holidays
    by_time = {r.scheduled_at: r for r in result.rows}
    gap = by_time[local(9, 6, 30)]
    assert gap.broadcast_id is None and gap.reason == asrun.NO_RECORD_REASON and gap.planned
    emergency = by_time[local(11, 6, 31)]
    assert not emergency.planned and emergency.kind == "emergency"
    assert "chưa được phê duyệt" in (by_time[local(7, 19, 0)].reason or "")
    assert "loa-tdp3-b: bị lỡ (missed: offline)" in (by_time[local(5, 6, 30)].reason or "")
    assert result.counts == {"aired": 7, "partial": 2, "preempted": 1, "missed": 2, "not_approved": 1, "not_aired": 0,
                             "failed": 1, "in_progress": 0, "future": 1}
    assert by_time[local(14, 19, 0)].category_vi == "chưa đến giờ"


def test_reconciliation_seen_from_one_tdp(sqlite_factory: sessionmaker[Session]) -> None:
    """Per TDP: 11/09 is preempted in TDP 1 but aired in TDP 3; 13/09 is partial in TDP 4 only."""
    with sqlite_factory() as s:
        tdp1 = {r.scheduled_at: r for r in asrun.reconcile(s, PERIOD, now=sample.NOW, zone="tdp-1").rows}
        tdp3 = {r.scheduled_at: r for r in asrun.reconcile(s, PERIOD, now=sample.NOW, zone="tdp-3").rows}
        tdp4 = {r.scheduled_at: r for r in asrun.reconcile(s, PERIOD, now=sample.NOW, zone="tdp-4").rows}
    assert tdp1[local(11, 6, 30)].category == Category.PREEMPTED
    assert tdp3[local(11, 6, 30)].category == Category.AIRED
    assert local(11, 6, 31) not in tdp3  # the emergency played in TDP 1 only
    assert local(3, 17, 0) not in tdp3 and local(3, 17, 0) in tdp1  # the afternoon slot targets TDP 1 and 2
    assert tdp4[local(13, 6, 30)].category == Category.PARTIAL and tdp3[local(13, 6, 30)].category == Category.AIRED
    assert tdp4[local(13, 6, 30)].reason == "loa-tdp4-a (phần 2): lỗi (mất luồng tiếp âm)"


def test_occurrences_before_the_slot_existed_are_not_planned(sqlite_factory: sessionmaker[Session]) -> None:
    """A slot created (per the audit trail) on 10/09 has no 'missed' occurrences before that day."""
    from radio.models import Slot

    with transaction(sqlite_factory) as s:
        s.add(Slot(id="moi", name="Chương trình mới", start_time=dt.time(20, 0), weekdays=""))
        audit.record(s, actor="can-bo-van-hoa", action=audit.SLOT_CREATED, entity_type="slot", entity_id="moi",
                     after={"id": "moi"}, at=local(10, 12, 0).astimezone(dt.UTC))
    with sqlite_factory() as s:
        rows = [r for r in asrun.reconcile(s, PERIOD, now=sample.NOW).rows if r.slot_id == "moi"]
    assert [r.scheduled_at.astimezone(sample.TZ).day for r in rows] == [10, 11, 12, 13, 14, 15]
    assert [r.category for r in rows] == [Category.MISSED] * 3 + [Category.FUTURE] * 3


def test_disabling_a_slot_keeps_its_past_and_drops_its_future(sqlite_factory: sessionmaker[Session]) -> None:
    """Disabling a slot removes its coming occurrences; what is stored for the past stays planned as it was."""
    from radio.models import Slot

    def rows() -> list[tuple[object, ...]]:
        with sqlite_factory() as s:
            return [(r.scheduled_at, r.category, r.planned, r.segment_id) for r in
                    asrun.reconcile(s, PERIOD, now=sample.NOW).rows if r.slot_id == "toi-thu-bay"]

    before = rows()
    assert [c for _at, c, _p, _s in before] == [Category.NOT_APPROVED, Category.FUTURE]
    with transaction(sqlite_factory) as s:
        s.get_one(Slot, "toi-thu-bay").enabled = False
    assert rows() == before[:1] and before[0][2]


def test_bad_inputs_are_refused_in_vietnamese() -> None:
    """Impossible dates, a reversed period and unknown filter values raise InvalidInput with Vietnamese text."""
    with pytest.raises(InvalidInput, match="ngày không hợp lệ"):
        Period.parse("2024-02-30", "2024-03-01", sample.TZ)
    with pytest.raises(InvalidInput, match="trước ngày bắt đầu"):
        Period.parse("15/09/2024", "01/09/2024", sample.TZ)
    assert Period.parse("01/09/2024", "2024-09-15", sample.TZ).label_vi == "Từ ngày 01/09/2024 đến ngày 15/09/2024"


def test_unknown_filter_values_are_refused(sqlite_factory: sessionmaker[Session]) -> None:
    """An unknown outcome or priority, or a silly page size, is a user error, not a crash."""
    with sqlite_factory() as s:
        for kwargs in ({"outcome": "great"}, {"priority": "urgent"}, {"limit": 0}, {"offset": -1}):
            with pytest.raises(InvalidInput):
                asrun.query(s, **kwargs)  # type: ignore[arg-type]


def test_period_is_whole_local_days() -> None:
    """'to' is included: the period ends at local midnight after it (17:00 UTC the day before in Vietnam)."""
    period = Period.parse("2024-01-01", "2024-09-15", sample.TZ)
    assert period.start == dt.datetime(2023, 12, 31, 17, 0, tzinfo=dt.UTC)
    assert period.end == dt.datetime(2024, 9, 15, 17, 0, tzinfo=dt.UTC)


def test_preempted_reason_is_recognised() -> None:
    """The shared PREEMPTED constant and the node agent's own wording both count as preemption."""
    assert asrun.is_preempted(asrun.PREEMPTED)
    assert asrun.is_preempted("preempted by emergency command 9f2c")
    assert not asrun.is_preempted("missed: offline") and not asrun.is_preempted(None)


# CLI -------------------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("RADIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADIO_DATABASE_URL", url)
    engine, _factory = seeded(url)
    engine.dispose()
    yield


def test_cli_log_filters_and_pages(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """'radio log' with a period, a zone and an outcome prints per-cluster lines and the page count."""
    assert main(["log", "--from", "2024-09-02", "--to", "2024-09-15", "--zone", "tdp-1", "--outcome", "failed"]) == 0
    out = capsys.readouterr().out
    assert "10/09/2024 17:00" in out and "loa-tdp1-b" in out and "không nhận được báo cáo" in out
    assert "Trang 1/1 — tổng 1 lượt phát" in out
    assert main(["log", "--from", "02/09/2024", "--to", "15/09/2024", "--limit", "5", "--page", "3"]) == 0
    assert "Trang 3/3 — tổng 13 lượt phát" in capsys.readouterr().out


def test_cli_reconcile_prints_categories(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """'radio reconcile' lists each occurrence with its Vietnamese category and the totals."""
    assert main(["reconcile", "--from", "2024-09-02", "--to", "2024-09-13"]) == 0
    out = capsys.readouterr().out
    assert "bị ngắt do phát khẩn cấp" in out and "chưa được phê duyệt" in out and "ngoài lịch" in out
    assert "phát đầy đủ 7" in out


def test_cli_bad_dates_exit_2(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad or half-given period prints 'Lỗi: ...' and exits 2."""
    assert main(["reconcile", "--from", "2024-13-01", "--to", "2024-09-15"]) == 2
    assert "Lỗi:" in capsys.readouterr().err
    assert main(["log", "--from", "2024-09-01"]) == 2
    assert "cần cả --from và --to" in capsys.readouterr().err


def test_reconciliation_filters_by_priority_and_outcome_and_pages(sqlite_factory: sessionmaker[Session]) -> None:
    """reconcile(priority=…, outcome=…) keeps matching rows (outcome: one category or several, comma-separated);
    page(limit, offset) slices them while total and counts cover them all; bad values name the field."""
    with sqlite_factory() as s:
        everything = asrun.reconcile(s, PERIOD, now=sample.NOW)
        urgent = asrun.reconcile(s, PERIOD, now=sample.NOW, priority="emergency")
        normal = asrun.reconcile(s, PERIOD, now=sample.NOW, priority="normal")
        bad = asrun.reconcile(s, PERIOD, now=sample.NOW, outcome="missed,not_approved")
        tdp1_preempted = asrun.reconcile(s, PERIOD, now=sample.NOW, zone="tdp-1", outcome="preempted")
        for kwargs, field in [({"priority": "khẩn"}, "priority"), ({"outcome": "aired,ok"}, "outcome")]:
            with pytest.raises(InvalidInput) as caught:
                asrun.reconcile(s, PERIOD, now=sample.NOW, **kwargs)  # type: ignore[arg-type]
            assert caught.value.where == field and "không hợp lệ" in str(caught.value)
    assert [r.kind for r in urgent.rows] == ["emergency"]
    assert len(normal.rows) + len(urgent.rows) == everything.total
    assert {r.category for r in bad.rows} == {Category.MISSED, Category.NOT_APPROVED}
    assert bad.total == everything.counts["missed"] + everything.counts["not_approved"] == 3
    assert [r.scheduled_at for r in tdp1_preempted.rows] == [local(11, 6, 30)]
    pages = [everything.page(limit=4, offset=o) for o in range(0, everything.total, 4)]
    assert [r for p in pages for r in p] == everything.rows and all(len(p) <= 4 for p in pages)
    assert everything.as_dict(limit=4, offset=4)["total"] == everything.total
    with pytest.raises(InvalidInput):
        everything.page(limit=0)


def test_dates_outside_2000_2100_are_refused_naming_the_field() -> None:
    """Year 1 or 9999 overflowed datetime arithmetic (OverflowError, HTTP 500); now InvalidInput naming it."""
    for first, last, field in [("0001-01-01", "2024-01-01", "from"), ("2024-01-01", "31/12/9999", "to"),
                               ("1999-12-31", "2000-01-01", "from"), ("2100-12-31", "2101-01-01", "to")]:
        with pytest.raises(InvalidInput) as caught:
            Period.parse(first, last, sample.TZ)
        assert caught.value.where == field and "năm 2000 đến năm 2100" in str(caught.value)
    with pytest.raises(InvalidInput):
        Period(dt.date(1, 1, 1), dt.date(1, 1, 2), sample.TZ)
    assert Period.parse("2100-01-01", "2100-12-31", sample.TZ).end.year in (2100, 2101)
