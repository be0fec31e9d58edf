"""The data model: SQLAlchemy Core tables, used through ``databases``.

Every schema change gets a migration under ``app/db/migrations/versions``;
``tests/test_migrations.py`` checks that the migrated schema equals this one, and
``tests/test_upgrades.py`` that data of every revision survives (each migration has a fixture).
Timestamps are timezone-naive UTC (``datetime.utcnow``-style) on both backends.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Enumerations are stored as short strings (portable, readable in SQL shells).
HYPERVISOR_TRANSPORTS = ("ssh", "local", "test")
HYPERVISOR_STATES = ("unknown", "up", "down")
VM_KINDS = ("simple", "source", "initial", "vdi", "unclassified")
USER_ROLES = ("admin", "client")
USER_SOURCES = ("local", "directory")
OPERATION_STATES = ("pending", "running", "succeeded", "failed", "interrupted")
FAILOVER_KINDS = ("none", "rdp", "horizon")


def _now() -> sa.sql.functions.current_timestamp:
    return sa.func.current_timestamp()


hypervisors = sa.Table(
    "hypervisors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("transport", sa.String(16), nullable=False, server_default="ssh"),
    sa.Column("address", sa.String(255), nullable=False, server_default=""),
    sa.Column("ssh_port", sa.Integer, nullable=False, server_default="22"),
    sa.Column("ssh_user", sa.String(64), nullable=False, server_default="vdi"),
    # Verbatim libvirt URI for "local"/"test" transports (e.g. test:///default).
    sa.Column("libvirt_uri", sa.String(512), nullable=True),
    # Console network address: SPICE listens there and the gateway connects there (empty = address).
    sa.Column("spice_address", sa.String(255), nullable=False, server_default=""),
    # Also offer SPICE's plain (unencrypted) port, for old clients; off: TLS only.
    sa.Column("spice_plain", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("images_dir", sa.String(512), nullable=False, server_default="/var/lib/kvm-vdi/images"),
    sa.Column("volatile_dir", sa.String(512), nullable=False, server_default="/var/lib/kvm-vdi/volatile"),
    sa.Column("iso_dir", sa.String(512), nullable=False, server_default="/var/lib/kvm-vdi/iso"),
    sa.Column("maintenance", sa.Boolean, nullable=False, server_default=sa.false()),
    # Pinned SSH host key, OpenSSH public-key line ("ssh-ed25519 AAAA..."); confirmed by an admin.
    sa.Column("host_key", sa.Text, nullable=True),
    sa.Column("host_key_confirmed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("state", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("state_reason", sa.Text, nullable=False, server_default=""),
    # The note as a msgid and its arguments (JSON), shown in each reader's language; "" for text.
    sa.Column("state_reason_i18n", sa.Text, nullable=False, server_default=""),
    sa.Column("state_changed_at", sa.DateTime, nullable=True),
    sa.Column("last_check_at", sa.DateTime, nullable=True),
    sa.Column("libvirt_version", sa.String(32), nullable=False, server_default=""),
    sa.Column("cpus", sa.Integer, nullable=True),
    sa.Column("memory_mib", sa.BigInteger, nullable=True),
    sa.Column("images_free_bytes", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
)

vms = sa.Table(
    "vms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("uuid", sa.String(36), nullable=True),
    sa.Column("hypervisor_id", sa.Integer, sa.ForeignKey("hypervisors.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("vms.id"), nullable=True, index=True),
    sa.Column("maintenance", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("locked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("volatile", sa.Boolean, nullable=False, server_default=sa.false()),
    # Last state seen from libvirt: running, shutoff, paused, crashed, pmsuspended, unknown.
    sa.Column("state", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("state_changed_at", sa.DateTime, nullable=True),
    sa.Column("os_type", sa.String(32), nullable=False, server_default="linux"),
    sa.Column("vcpu_sockets", sa.Integer, nullable=False, server_default="1"),
    sa.Column("vcpu_cores", sa.Integer, nullable=False, server_default="1"),
    sa.Column("memory_mib", sa.Integer, nullable=False, server_default="1024"),
    sa.Column("disk_path", sa.String(512), nullable=False, server_default=""),
    sa.Column("disk_size_gib", sa.Integer, nullable=False, server_default="0"),
    # The disk's format (qcow2; raw for an imported raw image), recorded once and never probed again.
    sa.Column("disk_format", sa.String(8), nullable=False, server_default="qcow2"),
    # The disk is an image that existed before the VM (imported without a copy).
    sa.Column("disk_imported", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("iso_path", sa.String(512), nullable=True),
    sa.Column("boot_order", sa.String(64), nullable=False, server_default="hd"),
    sa.Column("network", sa.String(64), nullable=True),
    sa.Column("mac_address", sa.String(17), nullable=True),
    # The IPv4 address the DHCP export gives the VM's MAC address, if any (one VM per address).
    sa.Column("fixed_address", sa.String(15), nullable=True, unique=True),
    # Machine and firmware: pc/q35, bios/uefi; the domain type they were placed on (kvm/qemu).
    sa.Column("machine", sa.String(8), nullable=False, server_default="pc"),
    sa.Column("firmware", sa.String(8), nullable=False, server_default="bios"),
    sa.Column("secure_boot", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("tpm", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("domain_type", sa.String(8), nullable=False, server_default=""),
    sa.Column("cpu_mode", sa.String(24), nullable=False, server_default="default"),
    # Hardware: disk bus and cache, network card, second CD-ROM, sound, monitors.
    sa.Column("disk_bus", sa.String(8), nullable=False, server_default="virtio"),
    sa.Column("disk_cache", sa.String(16), nullable=False, server_default="default"),
    sa.Column("nic_model", sa.String(16), nullable=False, server_default="virtio"),
    sa.Column("network_type", sa.String(8), nullable=False, server_default="bridge"),
    sa.Column("iso2_path", sa.String(512), nullable=True),
    sa.Column("sound_model", sa.String(8), nullable=False, server_default="none"),
    sa.Column("video_heads", sa.Integer, nullable=False, server_default="1"),
    # Device policy (a pooled VM follows its pool's): all off unless allowed.
    sa.Column("clipboard", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("file_transfer", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("usb_redirect", sa.Integer, nullable=False, server_default="0"),
    # The long operation currently holding this VM (copy disk, populate ...), if any.
    # No foreign key: operations already reference vms, and a cycle complicates DDL on MariaDB.
    sa.Column("operation_id", sa.Integer, nullable=True),
    # Broker assignment: set and cleared together with the lease (compare-and-set on this column).
    sa.Column("assigned_user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True, index=True),
    sa.Column("last_user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    # Golden image versions (no foreign keys: image_versions already references vms).
    # A VDI machine's overlay, and an initial's working disk, are backed by this version;
    # NULL: a VDI machine directly on its initial's own disk (made before versions existed).
    sa.Column("image_version_id", sa.Integer, nullable=True),
    # An initial machine's target version: what new and reset VDI machines run on.
    sa.Column("target_version_id", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
)

# Published versions of an initial machine's image: standalone qcow2 files that are never
# written once published; VDI machines are overlays of one of them.
image_versions = sa.Table(
    "image_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "initial_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("path", sa.String(512), nullable=False),
    # Where it was copied from: "source" (the source VM's disk), "initial" (the initial
    # machine's working disk) or "adopted" (a disk VDI machines already ran on).
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("origin_name", sa.String(64), nullable=False, server_default=""),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("note", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_by", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
    sa.UniqueConstraint("initial_id", "number"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(128), nullable=False),
    sa.Column("source", sa.String(16), nullable=False, server_default="local"),
    sa.Column("role", sa.String(16), nullable=False, server_default="client"),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("must_change_password", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("display_name", sa.String(255), nullable=False, server_default=""),
    sa.Column("email", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
    sa.Column("last_login_at", sa.DateTime, nullable=True),
    # The language chosen with the switch ("lt"); empty: the browser's, then the server's default.
    sa.Column("language", sa.String(16), nullable=False, server_default=""),
    # Desktop requests made: the allocation writes it, which serializes one user's requests
    # on every node of a Galera cluster (locks alone are not replicated).
    sa.Column("desktop_requests", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("username", "source"),
)

directory_groups = sa.Table(
    "directory_groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # As the directory names it: a CN ("vdi-users") or a full DN; matching is case-insensitive.
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
)

pools = sa.Table(
    "pools",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("maintenance", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lease_timeout_min", sa.Integer, nullable=False, server_default="5"),
    sa.Column("reset_on_handout", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("keep_ready", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_per_user", sa.Integer, nullable=False, server_default="1"),
    sa.Column("failover_kind", sa.String(16), nullable=False, server_default="none"),
    sa.Column("failover_host", sa.String(255), nullable=False, server_default=""),
    sa.Column("failover_domain", sa.String(255), nullable=False, server_default=""),
    sa.Column("failover_pool", sa.String(255), nullable=False, server_default=""),
    # After log-in, a user who can only use this pool (or holds a desktop of it) goes straight to it.
    sa.Column("straight_to_desktop", sa.Boolean, nullable=False, server_default=sa.false()),
    # Device policy of the pool's desktops: clipboard, file transfer, USB devices redirected.
    sa.Column("clipboard", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("file_transfer", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("usb_redirect", sa.Integer, nullable=False, server_default="0"),
    # How many snapshots the user of a persistent desktop may keep of it; 0: none.
    sa.Column("user_snapshots", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
)

pool_vms = sa.Table(
    "pool_vms",
    metadata,
    sa.Column("pool_id", sa.Integer, sa.ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True),
    # A VM belongs to at most one pool, so two pools can never hand out the same desktop.
    sa.Column(
        "vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True, unique=True
    ),
)

pool_users = sa.Table(
    "pool_users",
    metadata,
    sa.Column("pool_id", sa.Integer, sa.ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)

pool_groups = sa.Table(
    "pool_groups",
    metadata,
    sa.Column("pool_id", sa.Integer, sa.ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "group_id", sa.Integer, sa.ForeignKey("directory_groups.id", ondelete="CASCADE"), primary_key=True
    ),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id"), nullable=False, index=True),
    sa.Column("pool_id", sa.Integer, sa.ForeignKey("pools.id"), nullable=True, index=True),
    sa.Column("client_address", sa.String(64), nullable=False, server_default=""),
    sa.Column("started_at", sa.DateTime, nullable=False, server_default=_now()),
    sa.Column("last_heartbeat_at", sa.DateTime, nullable=False, server_default=_now()),
    sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
    sa.Column("ended_at", sa.DateTime, nullable=True, index=True),
    sa.Column("end_reason", sa.String(64), nullable=False, server_default=""),
)

console_tickets = sa.Table(
    "console_tickets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # SHA-256 of the 256-bit ticket; the ticket itself is never stored.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    # Tickets die with their user or VM (and their open connections are closed first).
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("host", sa.String(255), nullable=False),
    # The display's plain port (none when the hypervisor serves SPICE over TLS only) and TLS port.
    sa.Column("port", sa.Integer, nullable=True),
    sa.Column("tls_port", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
    # New connections are accepted until then; open ones continue.
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
    sa.Column("revoke_reason", sa.String(64), nullable=False, server_default=""),
)

# The SPICE password epoch of each VM with a console open: consoles valid at the same time share one
# password (derived from ``nonce`` and the dashboard's secret, never stored); revocation starts a new one.
console_epochs = sa.Table(
    "console_epochs",
    metadata,
    sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    # The password is accepted for new SPICE channels until then.
    sa.Column("valid_until", sa.DateTime, nullable=False),
)

# Bearer tokens: "login" tokens of the broker API (a desktop user's log-in, short-lived) and
# "personal" tokens of the admin API (named, made by an administrator, optional expiry, read-only scope).
API_TOKEN_KINDS = ("login", "personal")
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("kind", sa.String(16), nullable=False, server_default="login"),
    # What the administrator called a personal token ("backup script").
    sa.Column("name", sa.String(64), nullable=False, server_default=""),
    sa.Column("read_only", sa.Boolean, nullable=False, server_default=sa.false()),
    # Directory groups resolved at login, as a JSON list (the directory is asked again at every login).
    sa.Column("groups_json", sa.Text, nullable=False, server_default="[]"),
    sa.Column("client_address", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
    # None: a personal token that does not expire.
    sa.Column("expires_at", sa.DateTime, nullable=True),
    sa.Column("last_used_at", sa.DateTime, nullable=True),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
)

# Signed-in browsers. The cookie carries only a random id; this table its SHA-256 and the rest.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("id_hash", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    # The role the session was started with: a changed role ends it.
    sa.Column("role", sa.String(16), nullable=False),
    # Directory groups resolved at log-in, as a JSON list (kept here, never in the cookie).
    sa.Column("groups_json", sa.Text, nullable=False, server_default="[]"),
    sa.Column("client_address", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("seen_at", sa.DateTime, nullable=False),
)

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # copy_disk, populate, create_vdi, delete ...
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="SET NULL"), nullable=True, index=True),
    sa.Column("hypervisor_id", sa.Integer, sa.ForeignKey("hypervisors.id"), nullable=True),
    sa.Column("state", sa.String(16), nullable=False, server_default="pending", index=True),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    # The message as a msgid and its arguments (JSON), shown in each reader's language; "" for text.
    sa.Column("message_i18n", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("params_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_by", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
    sa.Column("started_at", sa.DateTime, nullable=True),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    # The dashboard replica running it; when that replica is gone, the operation is interrupted.
    sa.Column("replica", sa.String(128), nullable=False, server_default=""),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False, server_default=_now(), index=True),
    sa.Column("actor", sa.String(128), nullable=False, server_default=""),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(255), nullable=False, server_default=""),
    sa.Column("client_address", sa.String(64), nullable=False, server_default=""),
    # JSON object of non-secret details.
    sa.Column("details_json", sa.Text, nullable=False, server_default="{}"),
)

# Small admin-editable values: message of the day, etc.
preferences = sa.Table(
    "preferences",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False, server_default=""),
)

# One admin's own view settings (the VM table's density, page size, collapsed initials ...),
# kept by the server so they follow the admin from browser to browser.
user_preferences = sa.Table(
    "user_preferences",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False, server_default=""),
)

# Per-pool schedules: a keep-ready window, a nightly power-off of free desktops, a nightly reset or
# populate. ``last_run_at`` is the start time of the last run claimed (exactly once per start, even
# with several dashboards); ``last_status``/``last_result`` say how it ended.
pool_schedules = sa.Table(
    "pool_schedules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "pool_id", sa.Integer, sa.ForeignKey("pools.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    # Weekday numbers, Monday 0: "0,1,2,3,4".
    sa.Column("days", sa.String(16), nullable=False),
    # Local times of day (the dashboard's time zone), "HH:MM"; ``until`` only for a window.
    sa.Column("at", sa.String(5), nullable=False),
    sa.Column("until", sa.String(5), nullable=True),
    sa.Column("count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_by", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now()),
    sa.Column("last_run_at", sa.DateTime, nullable=True),
    sa.Column("last_finished_at", sa.DateTime, nullable=True),
    sa.Column("last_status", sa.String(16), nullable=True),
    sa.Column("last_result", sa.Text, nullable=True),
)

# Several replicas (cluster mode). Times in *_ms columns are milliseconds of the database's
# clock (one clock for every replica's decisions), written and compared in SQL.
cluster_replicas = sa.Table(
    "cluster_replicas",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False, server_default="all"),
    # Where it serves HTTP (host:port as configured), for admins.
    sa.Column("address", sa.String(255), nullable=False, server_default=""),
    sa.Column("version", sa.String(32), nullable=False, server_default=""),
    # Every replica must use the same SSH key pair and console CA: `kvm-vdi check` compares these.
    sa.Column("ssh_key_fingerprint", sa.String(128), nullable=False, server_default=""),
    sa.Column("ca_fingerprint", sa.String(128), nullable=False, server_default=""),
    sa.Column("started_at", sa.DateTime, nullable=False, server_default=_now()),
    sa.Column("seen_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()),
    # Browsers on /live (admins and clients) and open console connections, as of its last heartbeat.
    sa.Column("live_admins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("live_clients", sa.Integer, nullable=False, server_default="0"),
    sa.Column("console_connections", sa.Integer, nullable=False, server_default="0"),
)

# Leases that make one replica at a time do something (the background duties): a row with
# its holder and expiry, changed only in transactions (Galera certifies them; GET_LOCK is
# not replicated). ``epoch`` grows with every change of holder.
cluster_leases = sa.Table(
    "cluster_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False, server_default=""),
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("acquired_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("expires_ms", sa.BigInteger, nullable=False, server_default="0"),
)
