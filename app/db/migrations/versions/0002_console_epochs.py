"""console epochs; console tickets of displays without a plain port

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_epochs",
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("valid_until", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_console_epochs_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("vm_id", name=op.f("pk_console_epochs")),
    )
    with op.batch_alter_table("console_tickets", schema=None) as batch_op:
        batch_op.alter_column("port", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("console_tickets", schema=None) as batch_op:
        batch_op.alter_column("port", existing_type=sa.Integer(), nullable=False)
    op.drop_table("console_epochs")
