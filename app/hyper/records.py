"""A hypervisor as configured in the database, and the libvirt URI it is reached by."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Self
from urllib.parse import quote

from app.db.records import Record, Row
from app.db.schema import hypervisors
from app.hyper.sshkeys import DashboardKey, KnownHostsFile, known_hosts_entry
from app.i18n.messages import M_, Message, shown

DEFAULT_URIS = {"local": "qemu:///system", "test": "test:///default"}


@dataclass(frozen=True)
class HypervisorRecord(Record):
    """A ``hypervisors`` row: how to reach the hypervisor, and what the dashboard last saw of it."""

    __table__ = hypervisors

    id: int
    name: str
    transport: str = "ssh"
    address: str = ""
    ssh_port: int = 22
    ssh_user: str = "vdi"
    libvirt_uri: str | None = None
    spice_address: str = ""
    spice_plain: bool = False
    images_dir: str = "/var/lib/kvm-vdi/images"
    volatile_dir: str = "/var/lib/kvm-vdi/volatile"
    iso_dir: str = "/var/lib/kvm-vdi/iso"
    maintenance: bool = False
    host_key: str | None = None
    host_key_confirmed: bool = False
    # What the dashboard last saw (the registry's live view is newer).
    state: str = "unknown"
    state_reason: str = ""
    # The note kept to be shown in each reader's language (see app.i18n.messages); "" for text.
    state_reason_i18n: str = ""
    state_changed_at: datetime | None = None
    last_check_at: datetime | None = None
    libvirt_version: str = ""
    cpus: int | None = None
    memory_mib: int | None = None
    images_free_bytes: int | None = None
    created_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Row) -> Self:
        record = super().from_row(row)
        # Empty optional columns mean "not set".
        return replace(record, libvirt_uri=record.libvirt_uri or None, host_key=record.host_key or None)

    @property
    def label(self) -> str:
        return f"{self.name} (#{self.id})"

    @property
    def console_address(self) -> str:
        """Where SPICE listens and the dashboard connects: the console network address, else the
        hypervisor's address (loopback for a local hypervisor)."""
        if self.spice_address:
            return self.spice_address
        if self.is_ssh and self.address:
            return self.address
        return "127.0.0.1"

    @property
    def dirs(self) -> tuple[str, str, str]:
        """The directories commands may touch (images, volatile, ISO)."""
        return (self.images_dir, self.volatile_dir, self.iso_dir)

    @property
    def is_ssh(self) -> bool:
        return self.transport == "ssh"

    def not_connectable_reason(self) -> Message | None:
        """Why the dashboard must not connect to this hypervisor now, or ``None``."""
        if self.transport not in ("ssh", "local", "test"):
            return M_("unknown transport {transport}", transport=repr(self.transport))
        if not self.is_ssh:
            return None
        if not self.address:
            return M_("no address configured")
        if not self.host_key:
            return M_("host key not fetched yet")
        if not self.host_key_confirmed:
            return M_("host key awaiting confirmation")
        return None

    @property
    def state_note(self) -> str:
        """The note on :attr:`state` in the current language."""
        return shown(self.state_reason, self.state_reason_i18n)

    def known_hosts_entry(self) -> str | None:
        """This hypervisor's line in the dashboard's known_hosts file, if its key is confirmed."""
        if self.is_ssh and self.address and self.host_key and self.host_key_confirmed:
            return known_hosts_entry(self.address, self.ssh_port, self.host_key)
        return None

    def connection_identity(self) -> tuple[Any, ...]:
        """Fields whose change needs a new connection (others are applied in place)."""
        return (
            self.transport,
            self.address,
            self.ssh_port,
            self.ssh_user,
            self.libvirt_uri,
            self.host_key,
            self.host_key_confirmed,
        )

    def libvirt_uri_for_display(self) -> str:
        """The URI without key paths, for messages."""
        if self.is_ssh:
            return f"qemu+ssh://{self.ssh_user}@{self.address}:{self.ssh_port}/system"
        return self.libvirt_uri or DEFAULT_URIS.get(self.transport, "")

    def libvirt_uri_for(self, key: DashboardKey, known_hosts: KnownHostsFile) -> str:
        """The URI libvirt opens: the pinned-ssh transport for ``ssh``, the configured one otherwise."""
        if not self.is_ssh:
            return self.libvirt_uri or DEFAULT_URIS[self.transport]
        host = f"[{self.address}]" if ":" in self.address else self.address
        user = quote(self.ssh_user, safe="")
        query = "&".join(
            f"{name}={quote(str(value), safe='/')}"
            for name, value in (
                ("keyfile", key.private_path),
                # ssh through the wrapper that trusts only the dashboard's pinned keys.
                ("command", known_hosts.ssh_wrapper),
                ("no_tty", 1),
            )
        )
        return f"qemu+ssh://{user}@{host}:{self.ssh_port}/system?{query}"
