"""Past broadcasts keep what they were: segment and targets stored when they fire; migration 0007 backfills them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session, sessionmaker

from radio.db import MIGRATIONS, make_engine, migrate, session_factory, transaction
from radio.logbook import asrun, sample
from radio.models import Broadcast, BroadcastStatus, Slot, SlotTarget
from tests.logbook.conftest import seeded

BEFORE_0007 = ("0002_audit", "0003_nodes", "0005_auth", "0006_commands_valid_until")


@pytest.fixture
def sqlite_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with seeded(f"sqlite:///{tmp_path / 'history.db'}") as factory:
        yield factory


def test_migration_0007_backfills_and_unlinks_the_slot_foreign_key(db_url: str) -> None:
    """An existing database gets each broadcast's segment and targets from its slot; deliveries and commands
    survive; deleting the slot afterwards no longer clears broadcasts.slot_id (SQLite and PostgreSQL)."""
    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        for revision in BEFORE_0007:
            command.upgrade(cfg, revision)
    at = dt.datetime(2024, 9, 4, 23, 30)
    with engine.begin() as conn:
        run = conn.exec_driver_sql
        run("INSERT INTO segments (id, name) VALUES ('cds', 'Chuyển đổi số')")
        run("INSERT INTO zones (id, name) VALUES ('tdp-1', 'TDP 1'), ('tdp-2', 'TDP 2')")
        run("INSERT INTO nodes (id, zone_id, name, online, session) VALUES ('loa-1', 'tdp-1', 'Loa 1', true, 0), "
            "('loa-2', 'tdp-2', 'Loa 2', true, 0)")
        run("INSERT INTO node_groups (id, name) VALUES ('cho', 'Loa chợ')")
        run("INSERT INTO node_group_members (group_id, node_id) VALUES ('cho', 'loa-2')")
        run("INSERT INTO slots (id, name, segment_id, start_time, weekdays, interval_weeks, dates, exclude_dates, "
            "holidays, priority, enabled) VALUES ('sang', 'Bản tin sáng', 'cds', '06:30:00', '', 1, '[]', '[]', "
            "'keep', 'normal', true)")
        run("INSERT INTO slot_targets (slot_id, zone_id) VALUES ('sang', 'tdp-1')")
        run("INSERT INTO slot_group_targets (slot_id, group_id) VALUES ('sang', 'cho')")
        conn.execute(sa.text(
            "INSERT INTO broadcasts (id, occurrence_key, slot_id, kind, priority, title, scheduled_at, status) VALUES "
            "(1, 'slot:sang@2024-09-04T23:30:00Z', 'sang', 'scheduled', 'normal', 'Bản tin sáng', :at, 'completed'), "
            "(2, 'emergency:1', NULL, 'emergency', 'emergency', 'Khẩn', :at, 'completed')"), {"at": at})
        conn.execute(sa.text(
            "INSERT INTO commands (id, broadcast_id, topic, payload, created_at, valid_until, attempts) "
            "VALUES ('c1', 1, 't', '{}', :at, :at, 0)"), {"at": at})
        conn.execute(sa.text(
            "INSERT INTO deliveries (broadcast_id, node_id, part, command_id, state, issued_at) "
            "VALUES (1, 'loa-1', 0, 'c1', 'finished', :at), (1, 'loa-2', 0, 'c1', 'finished', :at)"), {"at": at})
    migrate(engine)
    with engine.begin() as conn:
        rows = {r.id: r for r in conn.execute(sa.text("SELECT id, slot_id, segment_id FROM broadcasts"))}
        assert (rows[1].slot_id, rows[1].segment_id) == ("sang", "cds")
        assert rows[2].segment_id is None
        assert conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM commands")).scalar() == 1
        conn.exec_driver_sql("DELETE FROM slot_targets WHERE slot_id = 'sang'")
        conn.exec_driver_sql("DELETE FROM slot_group_targets WHERE slot_id = 'sang'")
        conn.exec_driver_sql("DELETE FROM slots WHERE id = 'sang'")
        assert conn.execute(sa.text("SELECT slot_id FROM broadcasts WHERE id = 1")).scalar() == "sang"
    with session_factory(engine)() as s:
        b = s.get_one(Broadcast, 1)
        assert b.targets == {"zones": ["tdp-1"], "groups": ["cho"], "reach": ["tdp-1", "tdp-2"]}
    # Downgrading drops the two columns in place: the as-run rows hanging off broadcasts survive.
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007_broadcast_history@-1")
    with engine.begin() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("broadcasts")}
        assert "segment_id" not in columns and "targets" not in columns
        assert conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM commands")).scalar() == 1
    engine.dispose()


def test_a_broadcast_stores_its_slot_as_it_was(sqlite_factory: sessionmaker[Session]) -> None:
    """Any code path that inserts a slot's broadcast (firing, the runner's missed rows) stores its segment and
    targets; changing the slot later does not change them."""
    at = dt.datetime(2024, 9, 16, 10, 0, tzinfo=dt.UTC)
    with transaction(sqlite_factory) as s:
        s.add(Broadcast(occurrence_key="slot:chieu-t3-t5@x", slot_id="chieu-t3-t5", kind="scheduled",
                        priority="normal", title="x", scheduled_at=at, status=BroadcastStatus.MISSED))
    with transaction(sqlite_factory) as s:
        slot = s.get_one(Slot, "chieu-t3-t5")
        slot.segment_id = "cds"
        s.add(SlotTarget(slot_id="chieu-t3-t5", zone_id="tdp-4"))
    with sqlite_factory() as s:
        b = s.scalars(sa.select(Broadcast).where(Broadcast.occurrence_key == "slot:chieu-t3-t5@x")).one()
        assert b.segment_id == "cqtt"
        assert b.targets == {"zones": ["tdp-1", "tdp-2"], "groups": [], "reach": ["tdp-1", "tdp-2"]}


def test_record_unaired_keeps_missed_occurrences_when_the_slot_goes(sqlite_factory: sessionmaker[Session]) -> None:
    """09/09 (and 26–30/08, before the period) left no row; recorded before the slot is deleted, 09/09 stays
    a 'missed' occurrence of that segment."""
    period = asrun.Period(sample.FIRST, sample.LAST, sample.TZ)

    def morning() -> list[tuple[object, ...]]:
        with sqlite_factory() as s:
            return [(r.scheduled_at, r.category, r.segment_id, r.reason, r.whole_ward) for r in
                    asrun.reconcile(s, period, now=sample.NOW).rows if r.slot_id == "sang-ngay-thuong"]

    before = morning()
    assert len(before) == 8 and sum(1 for r in before if r[3] == asrun.NO_RECORD_REASON) == 1
    with transaction(sqlite_factory) as s:
        assert asrun.record_unaired(s, ["sang-ngay-thuong"], tz=sample.TZ, now=sample.NOW) == 6
        assert asrun.record_unaired(s, ["sang-ngay-thuong"], tz=sample.TZ, now=sample.NOW) == 0
        s.delete(s.get_one(Slot, "sang-ngay-thuong"))
    assert morning() == before


def test_claiming_an_occurrence_stores_its_segment(sqlite_factory: sessionmaker[Session], tmp_path: Path) -> None:
    """radio.broadcast: a slot's broadcast stores the slot's segment and targets; an emergency stores its
    bulletin's segment (Khẩn cấp) and its zones, so reports file it under that segment."""
    from radio.broadcast import Broadcaster, Item, Plan
    from radio.models import Bulletin, ItemKind
    from radio.settings import Settings

    caster = Broadcaster(Settings(data_dir=tmp_path / "data"), sqlite_factory, mqtt=None)  # type: ignore[arg-type]
    at = dt.datetime(2024, 9, 20, 10, 0, tzinfo=dt.UTC)
    with sqlite_factory() as s:
        urgent = Bulletin(id="khan", segment_id="khan-cap", title="Khẩn", text="Bão", status="approved")
        slot_id = caster._claim(Plan(occurrence_key="slot:chieu-t3-t5@t", kind="scheduled", title="Chiều",
                                     priority="normal", scheduled_at=at, items=[], slot_id="chieu-t3-t5",
                                     zone_ids=["tdp-1", "tdp-2"], segment_id="cqtt"))
        emergency_id = caster._claim(Plan(occurrence_key="emergency:t", kind="emergency", title="Khẩn",
                                          priority="emergency", scheduled_at=at, zone_ids=["tdp-1"],
                                          items=[Item(kind=ItemKind.BULLETIN, bulletin=urgent)]))
    with sqlite_factory() as s:
        scheduled, emergency = s.get_one(Broadcast, slot_id), s.get_one(Broadcast, emergency_id)
        assert (scheduled.segment_id, scheduled.targets) == (
            "cqtt", {"zones": ["tdp-1", "tdp-2"], "groups": [], "reach": ["tdp-1", "tdp-2"]})
        assert (emergency.segment_id, emergency.targets) == (
            "khan-cap", {"zones": ["tdp-1"], "groups": [], "reach": ["tdp-1"]})
