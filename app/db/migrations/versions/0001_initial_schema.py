"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("actor", sa.String(length=128), server_default="", nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), server_default="", nullable=False),
        sa.Column("client_address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("details_json", sa.Text(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)

    op.create_table(
        "directory_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_directory_groups_name")),
    )
    op.create_table(
        "hypervisors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("transport", sa.String(length=16), server_default="ssh", nullable=False),
        sa.Column("address", sa.String(length=255), server_default="", nullable=False),
        sa.Column("ssh_port", sa.Integer(), server_default="22", nullable=False),
        sa.Column("ssh_user", sa.String(length=64), server_default="vdi", nullable=False),
        sa.Column("libvirt_uri", sa.String(length=512), nullable=True),
        sa.Column("spice_address", sa.String(length=255), server_default="", nullable=False),
        sa.Column(
            "images_dir", sa.String(length=512), server_default="/var/lib/kvm-vdi/images", nullable=False
        ),
        sa.Column(
            "volatile_dir", sa.String(length=512), server_default="/var/lib/kvm-vdi/volatile", nullable=False
        ),
        sa.Column("iso_dir", sa.String(length=512), server_default="/var/lib/kvm-vdi/iso", nullable=False),
        sa.Column("maintenance", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("host_key", sa.Text(), nullable=True),
        sa.Column("host_key_confirmed", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="unknown", nullable=False),
        sa.Column("state_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("state_changed_at", sa.DateTime(), nullable=True),
        sa.Column("last_check_at", sa.DateTime(), nullable=True),
        sa.Column("libvirt_version", sa.String(length=32), server_default="", nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=True),
        sa.Column("memory_mib", sa.BigInteger(), nullable=True),
        sa.Column("images_free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hypervisors")),
        sa.UniqueConstraint("name", name=op.f("uq_hypervisors_name")),
    )
    op.create_table(
        "pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=255), server_default="", nullable=False),
        sa.Column("maintenance", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_timeout_min", sa.Integer(), server_default="5", nullable=False),
        sa.Column("reset_on_handout", sa.Boolean(), server_default=sa.text("1"), nullable=False),
        sa.Column("keep_ready", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_per_user", sa.Integer(), server_default="1", nullable=False),
        sa.Column("failover_kind", sa.String(length=16), server_default="none", nullable=False),
        sa.Column("failover_host", sa.String(length=255), server_default="", nullable=False),
        sa.Column("failover_domain", sa.String(length=255), server_default="", nullable=False),
        sa.Column("failover_pool", sa.String(length=255), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pools")),
        sa.UniqueConstraint("name", name=op.f("uq_pools_name")),
    )
    op.create_table(
        "preferences",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_preferences")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), server_default="local", nullable=False),
        sa.Column("role", sa.String(length=16), server_default="client", nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("must_change_password", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("display_name", sa.String(length=255), server_default="", nullable=False),
        sa.Column("email", sa.String(length=255), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", "source", name=op.f("uq_users_username_source")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("groups_json", sa.Text(), server_default="[]", nullable=False),
        sa.Column("client_address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "pool_groups",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["directory_groups.id"],
            name=op.f("fk_pool_groups_group_id_directory_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name=op.f("fk_pool_groups_pool_id_pools"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pool_id", "group_id", name=op.f("pk_pool_groups")),
    )
    op.create_table(
        "pool_users",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name=op.f("fk_pool_users_pool_id_pools"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_pool_users_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pool_id", "user_id", name=op.f("pk_pool_users")),
    )
    op.create_table(
        "vms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=True),
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("maintenance", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("volatile", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="unknown", nullable=False),
        sa.Column("state_changed_at", sa.DateTime(), nullable=True),
        sa.Column("os_type", sa.String(length=32), server_default="linux", nullable=False),
        sa.Column("vcpu_sockets", sa.Integer(), server_default="1", nullable=False),
        sa.Column("vcpu_cores", sa.Integer(), server_default="1", nullable=False),
        sa.Column("memory_mib", sa.Integer(), server_default="1024", nullable=False),
        sa.Column("disk_path", sa.String(length=512), server_default="", nullable=False),
        sa.Column("disk_size_gib", sa.Integer(), server_default="0", nullable=False),
        sa.Column("iso_path", sa.String(length=512), nullable=True),
        sa.Column("boot_order", sa.String(length=64), server_default="hd", nullable=False),
        sa.Column("network", sa.String(length=64), nullable=True),
        sa.Column("mac_address", sa.String(length=17), nullable=True),
        sa.Column("operation_id", sa.Integer(), nullable=True),
        sa.Column("assigned_user_id", sa.Integer(), nullable=True),
        sa.Column("last_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assigned_user_id"], ["users.id"], name=op.f("fk_vms_assigned_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["hypervisor_id"], ["hypervisors.id"], name=op.f("fk_vms_hypervisor_id_hypervisors")
        ),
        sa.ForeignKeyConstraint(["last_user_id"], ["users.id"], name=op.f("fk_vms_last_user_id_users")),
        sa.ForeignKeyConstraint(["parent_id"], ["vms.id"], name=op.f("fk_vms_parent_id_vms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vms")),
        sa.UniqueConstraint("name", name=op.f("uq_vms_name")),
    )
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vms_assigned_user_id"), ["assigned_user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vms_hypervisor_id"), ["hypervisor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vms_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "console_tickets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("tls_port", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoke_reason", sa.String(length=64), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_console_tickets_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_console_tickets_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_tickets")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_tickets_token_hash")),
    )
    with op.batch_alter_table("console_tickets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_tickets_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_console_tickets_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=True),
        sa.Column("client_address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("started_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column(
            "last_heartbeat_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("end_reason", sa.String(length=64), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"], name=op.f("fk_leases_pool_id_pools")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_leases_user_id_users")),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name=op.f("fk_leases_vm_id_vms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leases")),
    )
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leases_ended_at"), ["ended_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_pool_id"), ["pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=True),
        sa.Column("hypervisor_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("progress", sa.Float(), server_default="0", nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("params_json", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["hypervisor_id"], ["hypervisors.id"], name=op.f("fk_operations_hypervisor_id_hypervisors")
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_operations_vm_id_vms"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
    )
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operations_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_operations_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "pool_vms",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name=op.f("fk_pool_vms_pool_id_pools"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_pool_vms_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pool_id", "vm_id", name=op.f("pk_pool_vms")),
        sa.UniqueConstraint("vm_id", name=op.f("uq_pool_vms_vm_id")),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes (dropping them first fails on MariaDB for indexes
    # that back foreign keys).

    op.drop_table("pool_vms")
    op.drop_table("operations")
    op.drop_table("leases")
    op.drop_table("console_tickets")
    op.drop_table("vms")
    op.drop_table("pool_users")
    op.drop_table("pool_groups")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("preferences")
    op.drop_table("pools")
    op.drop_table("hypervisors")
    op.drop_table("directory_groups")
    op.drop_table("audit_log")
