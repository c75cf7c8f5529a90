"""commands: index on valid_until (the outbox closes recently expired commands every second)

Revision ID: 0006_commands_valid_until
Revises: 0001
"""
from alembic import op

revision = "0006_commands_valid_until"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commands_valid_until"), ["valid_until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_valid_until"))
