"""machine, firmware, hardware options and device policy of VMs; device policy of pools

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

VM_COLUMNS: list[tuple[str, Any, Any]] = [
    ("machine", sa.String(length=8), "pc"),
    ("firmware", sa.String(length=8), "bios"),
    ("secure_boot", sa.Boolean(), sa.false()),
    ("tpm", sa.Boolean(), sa.false()),
    ("domain_type", sa.String(length=8), ""),
    ("cpu_mode", sa.String(length=24), "default"),
    ("disk_bus", sa.String(length=8), "virtio"),
    ("disk_cache", sa.String(length=16), "default"),
    ("nic_model", sa.String(length=16), "virtio"),
    ("network_type", sa.String(length=8), "bridge"),
    ("sound_model", sa.String(length=8), "none"),
    ("video_heads", sa.Integer(), "1"),
    ("clipboard", sa.Boolean(), sa.false()),
    ("file_transfer", sa.Boolean(), sa.false()),
    ("usb_redirect", sa.Integer(), "0"),
]
POOL_COLUMNS: list[tuple[str, Any, Any]] = [
    ("clipboard", sa.Boolean(), sa.false()),
    ("file_transfer", sa.Boolean(), sa.false()),
    ("usb_redirect", sa.Integer(), "0"),
]


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        for name, kind, default in VM_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=False, server_default=default))
        batch.add_column(sa.Column("iso2_path", sa.String(length=512), nullable=True))
    with op.batch_alter_table("pools") as batch:
        for name, kind, default in POOL_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=False, server_default=default))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        for name, _kind, _default in reversed(POOL_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("iso2_path")
        for name, _kind, _default in reversed(VM_COLUMNS):
            batch.drop_column(name)
