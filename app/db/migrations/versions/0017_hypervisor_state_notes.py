"""hypervisor state notes kept as a msgid and arguments, shown in each reader's language

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hypervisors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_reason_i18n", sa.Text(), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("hypervisors", schema=None) as batch_op:
        batch_op.drop_column("state_reason_i18n")
