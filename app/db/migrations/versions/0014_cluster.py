"""cluster: replicas, duty leases, the replica running each operation, users' request counter

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_replicas",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), server_default="all", nullable=False),
        sa.Column("address", sa.String(length=255), server_default="", nullable=False),
        sa.Column("version", sa.String(length=32), server_default="", nullable=False),
        sa.Column("ssh_key_fingerprint", sa.String(length=128), server_default="", nullable=False),
        sa.Column("ca_fingerprint", sa.String(length=128), server_default="", nullable=False),
        sa.Column("started_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("seen_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("draining", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("live_admins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("live_clients", sa.Integer(), server_default="0", nullable=False),
        sa.Column("console_connections", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cluster_replicas")),
    )
    op.create_table(
        "cluster_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), server_default="", nullable=False),
        sa.Column("epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("acquired_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cluster_leases")),
    )
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replica", sa.String(length=128), server_default="", nullable=False))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("desktop_requests", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("desktop_requests")
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_column("replica")
    op.drop_table("cluster_leases")
    op.drop_table("cluster_replicas")
