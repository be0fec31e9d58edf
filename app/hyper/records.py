"""A hypervisor as configured in the database, and the libvirt URI it is reached by."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from app.hyper.sshkeys import DashboardKey, KnownHostsFile, known_hosts_entry

DEFAULT_URIS = {"local": "qemu:///system", "test": "test:///default"}


@dataclass(frozen=True)
class HypervisorRecord:
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | Any) -> HypervisorRecord:
        values = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
        return cls(
            id=int(values["id"]),
            name=str(values["name"]),
            transport=str(values["transport"]),
            address=str(values["address"] or ""),
            ssh_port=int(values["ssh_port"]),
            ssh_user=str(values["ssh_user"]),
            libvirt_uri=values["libvirt_uri"] or None,
            spice_address=str(values["spice_address"] or ""),
            spice_plain=bool(values.get("spice_plain", False)),
            images_dir=str(values["images_dir"]),
            volatile_dir=str(values["volatile_dir"]),
            iso_dir=str(values["iso_dir"]),
            maintenance=bool(values["maintenance"]),
            host_key=values["host_key"] or None,
            host_key_confirmed=bool(values["host_key_confirmed"]),
        )

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

    def not_connectable_reason(self) -> str | None:
        """Why the dashboard must not connect to this hypervisor now, or ``None``."""
        if self.transport not in ("ssh", "local", "test"):
            return f"unknown transport {self.transport!r}"
        if not self.is_ssh:
            return None
        if not self.address:
            return "no address configured"
        if not self.host_key:
            return "host key not fetched yet"
        if not self.host_key_confirmed:
            return "host key awaiting confirmation"
        return None

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
