"""broadcasts keep their history: segment and targets stored at fire time; slot_id without a foreign key

Revision ID: 0007_broadcast_history
Revises: 0004_schedule

Deleting a slot used to set broadcasts.slot_id to NULL (ON DELETE SET NULL) and reports grouped
broadcasts by the slot's *current* segment, so deleting, disabling or re-segmenting a slot rewrote past
reports. Now each broadcast stores its segment and targets (backfilled here from the slot where it still
exists) and slot_id is a plain column. See docs/audit.md, *Stable history*.

SQLite: rebuilding the table to drop the foreign key would cascade ``DROP TABLE broadcasts`` to
deliveries and commands (foreign keys are on), so the stored CREATE TABLE text is edited instead, the
way SQLite documents for removing a constraint (no data changes on disk).
"""
import re

import sqlalchemy as sa
from alembic import op

revision = "0007_broadcast_history"
down_revision = "0004_schedule"
branch_labels = None
depends_on = None


def _backfill() -> None:
    conn = op.get_bind()
    conn.execute(sa.text(
        "UPDATE broadcasts SET segment_id = (SELECT slots.segment_id FROM slots WHERE slots.id = broadcasts.slot_id) "
        "WHERE slot_id IS NOT NULL AND segment_id IS NULL"))
    from radio.models import slot_snapshot

    slot_ids = [r[0] for r in conn.execute(sa.text(
        "SELECT DISTINCT slot_id FROM broadcasts WHERE slot_id IS NOT NULL AND targets IS NULL"))]
    table = sa.table("broadcasts", sa.column("slot_id", sa.String), sa.column("targets", sa.JSON))
    for slot_id in slot_ids:
        _segment, targets = slot_snapshot(conn, slot_id)
        if targets is not None:
            conn.execute(table.update().where(table.c.slot_id == slot_id, table.c.targets.is_(None))
                         .values(targets=targets))


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        with op.batch_alter_table("broadcasts", schema=None) as batch_op:
            batch_op.add_column(sa.Column("segment_id", sa.String(length=64), nullable=True))
            batch_op.add_column(sa.Column("targets", sa.JSON(), nullable=True))
            batch_op.drop_constraint("fk_broadcasts_slot_id_slots", type_="foreignkey")
            batch_op.create_index(batch_op.f("ix_broadcasts_segment_id"), ["segment_id"], unique=False)
        _backfill()
        return
    # SQLite: removing a foreign key changes nothing on disk, so the documented way is to edit the stored
    # CREATE TABLE (https://sqlite.org/lang_altertable.html, "Making other kinds of table schema changes");
    # rebuilding the table would cascade its DROP to deliveries and commands.
    op.add_column("broadcasts", sa.Column("segment_id", sa.String(length=64), nullable=True))
    op.add_column("broadcasts", sa.Column("targets", sa.JSON(), nullable=True))
    op.create_index("ix_broadcasts_segment_id", "broadcasts", ["segment_id"], unique=False)
    conn = op.get_bind()
    sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'broadcasts'")).scalar()
    stripped = re.sub(r",\s*CONSTRAINT fk_broadcasts_slot_id_slots FOREIGN KEY\s*\(slot_id\) REFERENCES \"?slots\"?\s*"
                      r"\(id\)(\s*ON DELETE SET NULL)?", "", sql or "")
    if stripped != sql:
        version = conn.execute(sa.text("PRAGMA schema_version")).scalar()
        conn.execute(sa.text("PRAGMA writable_schema = ON"))
        conn.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'broadcasts'"),
                     {"sql": stripped})
        conn.execute(sa.text(f"PRAGMA schema_version = {int(version or 0) + 1}"))
        conn.execute(sa.text("PRAGMA writable_schema = OFF"))
    left = [row for row in conn.execute(sa.text("PRAGMA foreign_key_list(broadcasts)")) if row[2] == "slots"]
    if left:  # a schema this migration does not know: stop rather than leave the cascade in place
        raise RuntimeError(f"migration 0007: could not remove broadcasts' foreign key to slots from: {sql}")
    _backfill()


def downgrade() -> None:
    # The foreign key is not put back: rows of deleted slots would violate it. Columns are dropped in place
    # (ALTER TABLE DROP COLUMN, SQLite 3.35+): a batch rebuild would cascade its DROP TABLE to deliveries.
    op.drop_index("ix_broadcasts_segment_id", table_name="broadcasts")
    op.drop_column("broadcasts", "targets")
    op.drop_column("broadcasts", "segment_id")
