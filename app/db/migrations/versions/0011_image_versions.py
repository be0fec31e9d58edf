"""golden image versions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # VDI machines made before versions existed keep image_version_id NULL: they run on their
    # initial's own disk, which the first publication adopts as a version.
    op.create_table(
        "image_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("initial_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("origin_name", sa.String(length=64), server_default="", nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(length=255), server_default="", nullable=False),
        sa.Column("created_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["initial_id"], ["vms.id"], name=op.f("fk_image_versions_initial_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_versions")),
        sa.UniqueConstraint("initial_id", "number", name=op.f("uq_image_versions_initial_id_number")),
    )
    with op.batch_alter_table("image_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_versions_initial_id"), ["initial_id"], unique=False)
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_version_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("target_version_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("target_version_id")
        batch_op.drop_column("image_version_id")
    op.drop_table("image_versions")
