"""audit trail: hash-chained audit_log, its audit_head, append-only triggers

Revision ID: 0002_audit
Revises: 0001
Create Date: 2026-11-28 09:00:00

The triggers refuse UPDATE/DELETE on audit_log (and TRUNCATE on PostgreSQL) and DELETE on audit_head,
so no code path or slip of the hand can change the trail; the hash chain (radio.logbook.audit) is
what detects an owner who drops them first. See docs/audit.md.
"""
import sqlalchemy as sa
from alembic import op

import radio.models

revision = "0002_audit"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
APPEND_ONLY = "audit_log is append-only"
KEEP_HEAD = "audit_head cannot be deleted"


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", radio.models.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_log_hash")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", radio.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(head, [{"id": 1, "last_id": 0, "hash": GENESIS,
                           "updated_at": radio.models.utcnow()}])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$""")
        op.execute(f"""
            CREATE FUNCTION audit_head_keep() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{KEEP_HEAD}'; END $$""")
        op.execute("CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
        op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")
        op.execute("CREATE TRIGGER audit_head_no_delete BEFORE DELETE OR TRUNCATE ON audit_head "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_head_keep()")
    else:
        op.execute(f"CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
                   f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")
        op.execute(f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
                   f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")
        op.execute(f"CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
                   f"BEGIN SELECT RAISE(ABORT, '{KEEP_HEAD}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_head_no_delete ON audit_head")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_head_keep()")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        for name in ("audit_head_no_delete", "audit_log_no_delete", "audit_log_no_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))
        batch_op.drop_index(batch_op.f("ix_audit_log_actor"))
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))
    op.drop_table("audit_log")
