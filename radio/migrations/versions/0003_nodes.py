"""nodes: heartbeat columns (volume, what plays, link quality, clock offset, silence)

Revision ID: 0003_nodes
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

import radio.models

revision = "0003_nodes"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = [
    ("volume", sa.Integer()),
    ("playing_command_id", sa.String(length=64)),
    ("link_rtt_ms", sa.Float()),
    ("link_rssi_dbm", sa.Integer()),
    ("clock_offset_ms", sa.Float()),
    ("player", sa.String(length=64)),
    ("heartbeat_at", radio.models.UTCDateTime()),
    ("silent_since", radio.models.UTCDateTime()),
]


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
