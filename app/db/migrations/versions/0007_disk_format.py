"""the format of each VM's disk, and whether it was imported

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(
            sa.Column("disk_format", sa.String(length=8), nullable=False, server_default="qcow2")
        )
        batch.add_column(sa.Column("disk_imported", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("disk_imported")
        batch.drop_column("disk_format")
