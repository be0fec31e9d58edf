"""a VM's fixed IPv4 address, for the DHCP export

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("fixed_address", sa.String(length=15), nullable=True))
        batch.create_unique_constraint(op.f("uq_vms_fixed_address"), ["fixed_address"])


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_constraint(op.f("uq_vms_fixed_address"), type_="unique")
        batch.drop_column("fixed_address")
