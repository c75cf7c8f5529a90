"""The audit trail: a hash chain that names the first record edited, deleted or rewritten behind its back.

Tampering is done the way an intruder would: plain SQL on the database (SQLite and PostgreSQL), after
dropping or disabling the append-only triggers that the migration installs.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from radio.cli import main
from radio.db import make_engine, migrate, session_factory, transaction
from radio.errors import InvalidInput
from radio.logbook import audit
from radio.logbook.audit import AuditEntry, AuditHead
from radio.models import Slot

N = 10


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def fill(factory: sessionmaker[Session], n: int = N) -> list[str]:
    """n entries, one transaction each, with the kinds of values real changes carry; returns their hashes."""
    hashes = []
    for i in range(1, n + 1):
        with transaction(factory) as s:
            entry = audit.record(
                s, actor="can-bo-van-hoa" if i % 2 else "system", action=audit.BULLETIN_UPDATED,
                entity_type="bulletin", entity_id=f"ban-tin-{i}",
                before={"title": "Thông báo lịch tiêm chủng", "rate": 150, "volume": 0.75, "tags": ["y tế"]},
                after={"title": f"Thông báo lịch tiêm chủng đợt {i}", "rate": 160, "volume": 1.0 / 3,
                       "nested": {"ngày": dt.date(2024, 9, i), "lúc": dt.datetime(2024, 9, i, 1, 2, 3, tzinfo=dt.UTC)}},
            )
            hashes.append(entry.hash)
    return hashes


def disarm(engine: Engine) -> None:
    """What an intruder with owner rights does first: switch off the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
            conn.exec_driver_sql("ALTER TABLE audit_head DISABLE TRIGGER USER")
        else:
            for name in ("audit_log_no_update", "audit_log_no_delete", "audit_head_no_delete"):
                conn.exec_driver_sql(f"DROP TRIGGER {name}")


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def verify(factory: sessionmaker[Session], anchors: list[tuple[int, str]] | None = None) -> audit.VerifyResult:
    with factory() as s:
        return audit.verify(s, anchors or [])


def test_fresh_chain_links_every_record_and_verifies(factory: sessionmaker[Session]) -> None:
    """Ids run 1..N, each prev_hash is the previous hash, the head names the last record, and verify says ok."""
    hashes = fill(factory)
    with factory() as s:
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        head = s.get_one(AuditHead, 1)
    assert [r.id for r in rows] == list(range(1, N + 1))
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))
    assert [r.hash for r in rows] == hashes
    assert all(audit.entry_hash(r) == r.hash for r in rows)
    assert (head.last_id, head.hash) == (N, hashes[-1])
    assert rows[3].after is not None
    assert rows[3].after["nested"] == {"ngày": "2024-09-04", "lúc": "2024-09-04T01:02:03.000000Z"}
    result = verify(factory)
    assert result.ok and result.count == N and result.first_broken_id is None
    assert result.head == audit.Head(N, hashes[-1])


def test_empty_log_verifies(factory: sessionmaker[Session]) -> None:
    """A new database has an empty, valid chain whose head is the genesis hash."""
    result = verify(factory)
    assert result.ok and result.count == 0 and result.head == audit.Head(0, audit.GENESIS)


def test_an_entry_rolls_back_with_the_change_it_records(factory: sessionmaker[Session]) -> None:
    """If the audited change fails, its audit record and the head move vanish with it."""
    fill(factory, 2)
    with pytest.raises(RuntimeError), transaction(factory) as s:
        audit.record(s, actor="cli", action=audit.SLOT_DELETED, entity_type="slot", entity_id="x", before={"a": 1},
                     after=None)
        raise RuntimeError("the change itself failed")
    with factory() as s:
        assert s.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1)) == 2
        assert audit.head(s).last_id == 2
    assert verify(factory).ok


def test_triggers_refuse_update_and_delete(engine: Engine, factory: sessionmaker[Session]) -> None:
    """Without disarming them, the database itself refuses to change or delete audit rows or the head."""
    fill(factory, 3)
    for statement in ("UPDATE audit_log SET actor = 'ke-gian' WHERE id = 2", "DELETE FROM audit_log WHERE id = 3",
                      "DELETE FROM audit_head"):
        with pytest.raises(DBAPIError, match="append-only|cannot be deleted"):
            sql(engine, statement)
    assert verify(factory).ok


def test_direct_update_names_the_modified_record(engine: Engine, factory: sessionmaker[Session]) -> None:
    """UPDATE of one column of record 5 → 'record 5 was modified'."""
    fill(factory)
    disarm(engine)
    sql(engine, "UPDATE audit_log SET actor = 'ke-gian' WHERE id = 5")
    result = verify(factory)
    assert not result.ok and result.first_broken_id == 5 and result.count == 4
    assert result.reason == "record 5 was modified (its content does not match its hash)"
    assert result.reason_vi == "bản ghi 5 đã bị sửa (nội dung không khớp mã băm)"


def test_direct_update_of_the_json_before_after_is_caught(engine: Engine, factory: sessionmaker[Session]) -> None:
    """Rewriting what a change looked like (the JSON 'after') is caught like any other column."""
    fill(factory)
    disarm(engine)
    sql(engine, "UPDATE audit_log SET after = :after WHERE id = 3", after='{"title": "đã sửa"}')
    result = verify(factory)
    assert (result.ok, result.first_broken_id) == (False, 3)
    assert result.reason and result.reason.startswith("record 3 was modified")


def test_deleted_middle_record_is_named(engine: Engine, factory: sessionmaker[Session]) -> None:
    """DELETE of record 7 → 'record 7 is missing (chain jumps from 6 to 8)'."""
    fill(factory)
    disarm(engine)
    sql(engine, "DELETE FROM audit_log WHERE id = 7")
    result = verify(factory)
    assert not result.ok and result.first_broken_id == 7
    assert result.reason == "record 7 is missing (chain jumps from 6 to 8)"


def test_deleted_range_is_named(engine: Engine, factory: sessionmaker[Session]) -> None:
    """Several consecutive deleted records are named as a range."""
    fill(factory)
    disarm(engine)
    sql(engine, "DELETE FROM audit_log WHERE id BETWEEN 1 AND 3")
    result = verify(factory)
    assert (result.first_broken_id, result.reason) == (1, "record 1–3 is missing (chain starts at 4)")


def test_deleted_last_record_is_caught_by_the_head(engine: Engine, factory: sessionmaker[Session]) -> None:
    """Tail truncation leaves a valid shorter chain, but the head still names the deleted record."""
    fill(factory)
    disarm(engine)
    sql(engine, "DELETE FROM audit_log WHERE id >= 9")
    result = verify(factory)
    assert not result.ok and result.first_broken_id == 9
    assert result.reason == "record 9–10 is missing (the log ends at 8 but its head names 10)"


def test_rewritten_record_with_recomputed_hash_breaks_the_next_link(engine: Engine,
                                                                    factory: sessionmaker[Session]) -> None:
    """A record edited and re-hashed is self-consistent, but the next record's prev_hash names it."""
    fill(factory)
    disarm(engine)
    with factory() as s:
        row = s.get_one(AuditEntry, 4)
        forged = audit.compute_hash(id=4, at=row.at, actor="ke-gian", action=row.action, entity_type=row.entity_type,
                                    entity_id=row.entity_id, before=row.before, after=row.after,
                                    prev_hash=row.prev_hash)
    sql(engine, "UPDATE audit_log SET actor = 'ke-gian', hash = :h WHERE id = 4", h=forged)
    result = verify(factory)
    assert not result.ok and result.first_broken_id == 4
    assert result.reason == "record 5's previous-hash does not match record 4 (record 4 was rewritten)"


def test_whole_rewrite_needs_an_anchor_kept_outside(engine: Engine, factory: sessionmaker[Session]) -> None:
    """Re-hashing every record and the head passes verify (the documented limit); a noted head catches it."""
    hashes = fill(factory)
    anchor = (6, hashes[5])  # what a report printed when record 6 was the head
    disarm(engine)
    with factory() as s:
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    prev = audit.GENESIS
    for row in rows:
        actor = "ke-gian" if row.id == 2 else row.actor
        new = audit.compute_hash(id=row.id, at=row.at, actor=actor, action=row.action, entity_type=row.entity_type,
                                 entity_id=row.entity_id, before=row.before, after=row.after, prev_hash=prev)
        sql(engine, "UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h WHERE id = :i",
            a=actor, p=prev, h=new, i=row.id)
        prev = new
    sql(engine, "UPDATE audit_head SET hash = :h", h=prev)
    assert verify(factory).ok  # an owner can rewrite everything consistently...
    result = verify(factory, [anchor])  # ...but not the head hash printed on last month's report
    assert not result.ok and result.first_broken_id == 6
    assert result.reason == "record 6 does not match the checkpoint noted earlier (the chain was rewritten)"


def test_row_inserted_around_the_writer_is_caught(engine: Engine, factory: sessionmaker[Session]) -> None:
    """A well-formed record appended by SQL without moving the head is 'not covered by the chain head'."""
    hashes = fill(factory, 3)
    at = dt.datetime(2024, 9, 1, tzinfo=dt.UTC)
    forged = audit.compute_hash(id=4, at=at, actor="ke-gian", action="slot.deleted", entity_type="slot",
                                entity_id="x", before=None, after=None, prev_hash=hashes[-1])
    with transaction(factory) as s:
        s.add(AuditEntry(id=4, at=at, actor="ke-gian", action="slot.deleted", entity_type="slot", entity_id="x",
                         before=None, after=None, prev_hash=hashes[-1], hash=forged))
    result = verify(factory)
    assert (result.ok, result.first_broken_id) == (False, 4)
    assert result.reason == "record 4 is not covered by the chain head (appended outside the audit writer)"


def test_concurrent_writers_keep_a_single_chain(factory: sessionmaker[Session]) -> None:
    """Eight threads appending at once never fork the chain: ids 1..120, one link each, verify ok."""
    threads, per_thread = 8, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with transaction(factory) as s:
                    s.scalar(select(func.count()).select_from(AuditEntry))  # a real change reads first
                    audit.record(s, actor=f"user-{k}", action=audit.SLOT_UPDATED, entity_type="slot",
                                 entity_id=f"slot-{k}-{i}", before={"i": i}, after={"i": i + 1})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors, errors
    with factory() as s:
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    assert [r.id for r in rows] == list(range(1, threads * per_thread + 1))
    assert len({r.prev_hash for r in rows}) == len(rows)
    result = verify(factory)
    assert result.ok and result.count == threads * per_thread


def test_snapshot_gives_json_safe_columns(factory: sessionmaker[Session]) -> None:
    """snapshot() turns a row's times, dates and JSON lists into plain values, plus any extra keys."""
    slot = Slot(id="sang", name="Bản tin sáng", start_time=dt.time(6, 30), weekdays="mon,fri", interval_weeks=1,
                dates=["2024-09-02"], exclude_dates=[], valid_from=dt.date(2024, 1, 1), valid_until=None,
                holidays="skip", priority="normal", enabled=True)
    data = audit.snapshot(slot, {"zone_ids": ["tdp-1"]})
    assert data["start_time"] == "06:30:00" and data["valid_from"] == "2024-01-01" and data["dates"] == ["2024-09-02"]
    assert data["zone_ids"] == ["tdp-1"] and data["name"] == "Bản tin sáng"
    with transaction(factory) as s:
        entry = audit.record(s, actor="cli", action=audit.SLOT_CREATED, entity_type="slot", entity_id="sang",
                             before=None, after=data)
    assert entry.after == data


def test_record_rejects_empty_or_oversized_fields(factory: sessionmaker[Session]) -> None:
    """An empty actor or an action longer than its column is refused before anything is written."""
    with factory() as s:
        with pytest.raises(ValueError, match="actor"):
            audit.record(s, actor="", action="x.y", entity_type="x")
        with pytest.raises(ValueError, match="action"):
            audit.record(s, actor="cli", action="x" * 65, entity_type="x")


def test_anchor_parsing() -> None:
    """'N:HASH' as printed by 'radio audit head' parses; anything else is refused in Vietnamese."""
    digest = "ab" * 32
    assert audit.parse_anchor(f" 17:{digest.upper()} ") == (17, digest)
    with pytest.raises(InvalidInput, match="mốc kiểm tra không hợp lệ"):
        audit.parse_anchor("17-abc")


# CLI -------------------------------------------------------------------------------------------------
@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("RADIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADIO_DATABASE_URL", url)
    engine = make_engine(url)
    migrate(engine)
    return engine, session_factory(engine)


def test_cli_verify_exit_codes(cli_db: tuple[Engine, sessionmaker[Session]], capsys: pytest.CaptureFixture[str]) -> None:
    """'radio audit verify' exits 0 on a good chain and 1 naming the first broken record after tampering."""
    engine, factory = cli_db
    hashes = fill(factory, 5)
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "toàn vẹn: 5 bản ghi" in out and hashes[-1] in out
    assert main(["audit", "head"]) == 0
    assert capsys.readouterr().out.strip() == f"5:{hashes[-1]}"
    disarm(engine)
    sql(engine, "UPDATE audit_log SET entity_id = 'khac' WHERE id = 2")
    engine.dispose()
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "BỊ PHÁ VỠ tại bản ghi 2" in out and "record 2 was modified" in out
    assert main(["audit", "verify", "--anchor", "nonsense"]) == 2
    assert "Lỗi:" in capsys.readouterr().err


def test_cli_audit_log_lists_newest_first(cli_db: tuple[Engine, sessionmaker[Session]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """'radio audit log --limit 2' prints the two newest records with who and what changed."""
    _engine, factory = cli_db
    fill(factory, 4)
    assert main(["audit", "log", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("#4") and lines[1].startswith("#3")
    assert "bulletin.updated" in lines[0] and "bulletin:ban-tin-4" in lines[0] and "title" in lines[0]
    assert "2/4 bản ghi" in lines[-1]
