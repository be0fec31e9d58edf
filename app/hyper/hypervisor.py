"""The :class:`Hypervisor` callers get from the registry: its state and its operations.

The object lives as long as the hypervisor is configured; its connection
(:class:`~app.hyper.session.Session`) comes and goes underneath. An operation
while it is not connected raises :class:`HypervisorUnavailable` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from app.hyper import agent, backup, capabilities, domains, graphics, screenshot, snapshots
from app.hyper.agent import GuestInfo
from app.hyper.backup import BackupJob
from app.hyper.capabilities import HostCapabilities, Trial
from app.hyper.commands import CommandResult
from app.hyper.disks import DiskFile, DiskOperations, ProgressCallback
from app.hyper.domains import DomainInfo
from app.hyper.errors import HypervisorUnavailable
from app.hyper.features import HostFeatures
from app.hyper.graphics import SpiceEndpoint
from app.hyper.images import ImageInfo, ImageOperations, ListedImage
from app.hyper.paths import confine
from app.hyper.records import HypervisorRecord
from app.hyper.snapshots import SnapshotInfo
from app.i18n.messages import M_
from app.tlsca import CertificateState

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.hyper.session import HypervisorFacts, Session
    from app.settings import HypervisorSettings

T = TypeVar("T")


class Hypervisor:
    def __init__(self, record: HypervisorRecord, settings: HypervisorSettings) -> None:
        self.record = record
        self.settings = settings
        self.state = "unknown"
        # The note on the state: English (logs, alerts, the audit log) and kept for each reader.
        self.reason = "not connected yet"
        self.reason_i18n = M_("not connected yet").to_json()
        self.reason_code = ""
        self.state_changed_at: datetime | None = None
        self.facts: HypervisorFacts | None = None
        self.images_free_bytes: int | None = None
        # The SPICE certificate as last checked or issued (None: not yet, or no SPICE here).
        self.spice_certificate: CertificateState | None = None
        self._session: Session | None = None
        # What the connected host can run; new with each connection (the host may have changed).
        self._features: HostFeatures | None = None
        # How many connections this hypervisor has had; each new one is announced to the
        # connection listeners, since events missed while reconnecting are not replayed.
        self.connections = 0

    def __repr__(self) -> str:
        return f"<Hypervisor {self.record.label} {self.state}>"

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def connected(self) -> bool:
        return self._session is not None

    @property
    def maintenance(self) -> bool:
        return self.record.maintenance

    @property
    def accepting_work(self) -> bool:
        """Up, connected and not in maintenance: new desktops may be placed and started here."""
        return self.state == "up" and self.connected and not self.record.maintenance

    def status(self) -> dict[str, Any]:
        """The ``hypervisor`` live-topic message (and JSON view) of this hypervisor."""
        facts = self.facts
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "reason_i18n": self.reason_i18n,
            "reason_code": self.reason_code,
            "connected": self.connected,
            "maintenance": self.maintenance,
            "accepting_work": self.accepting_work,
            "changed_at": self.state_changed_at.isoformat() if self.state_changed_at else None,
            "libvirt_version": facts.libvirt_version if facts else None,
            "cpus": facts.cpus if facts else None,
            "memory_mib": facts.memory_mib if facts else None,
            "images_free_bytes": self.images_free_bytes,
        }

    # -- connection plumbing (used by the monitor) ---------------------------------

    def attach(self, session: Session) -> None:
        self._session = session
        self._features = HostFeatures(session.libvirt.call, session.runner, self.record.volatile_dir)
        self.connections += 1

    def detach(self) -> Session | None:
        session, self._session = self._session, None
        self._features = None
        return session

    @property
    def reconnect_window(self) -> float:
        """How long a lost connection may take to come back on its own (retries, then one attempt)."""
        settings = self.settings
        return max(settings.fence_after, settings.reconnect_max) + settings.connect_timeout

    async def wait_connection(self, *, newer_than: int, within: float) -> bool:
        """Wait at most ``within`` seconds for a connection newer than the ``newer_than``-th
        (:attr:`connections` before a call that found the connection lost); True when there is one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._session is None or self.connections <= newer_than:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    def _live(self) -> Session:
        session = self._session
        if session is None:
            raise HypervisorUnavailable(
                f"hypervisor {self.name} is not connected ({self.state}: {self.reason})"
            )
        return session

    async def _libvirt(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._live().libvirt.call(fn, *args)

    def _disks(self) -> DiskOperations:
        return DiskOperations(self._live().runner, self.record.dirs)

    # -- commands ---------------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- kills the command when it expires
        check: bool = True,
    ) -> CommandResult:
        """Run an argument vector on the hypervisor (quoted per argument over SSH)."""
        return await self._live().runner.run(
            argv, timeout=timeout if timeout is not None else self.settings.command_timeout, check=check
        )

    def confine(self, path: str) -> str:
        """``path`` if it lies inside this hypervisor's images/volatile/ISO directories; raises otherwise."""
        return confine(path, self.record.dirs)

    async def create_overlay(self, base: str, path: str, *, replace: bool = False) -> None:
        await self._disks().create_overlay(base, path, replace=replace)

    async def convert_disk(
        self,
        src: str,
        dst: str,
        on_progress: ProgressCallback | None = None,
        *,
        op_id: str | None = None,
        src_format: str = "qcow2",
        replace: bool = False,
    ) -> None:
        await self._disks().convert_disk(
            src, dst, on_progress, op_id=op_id, src_format=src_format, replace=replace
        )

    async def create_blank(self, path: str, size_bytes: int) -> None:
        """A new empty standalone qcow2 of ``size_bytes`` at ``path`` (never over an existing file)."""
        await self._disks().create_blank(path, size_bytes)

    async def rename_file(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` in one step (same directory; ``dst`` replaced)."""
        await self._disks().rename_file(src, dst)

    async def remove_file(self, path: str) -> None:
        await self._disks().remove_file(path)

    async def file_exists(self, path: str) -> bool:
        return await self._disks().file_exists(path)

    async def list_isos(self) -> list[DiskFile]:
        return await self._disks().list_isos()

    async def free_bytes(self, path: str) -> int:
        return await self._disks().free_bytes(path)

    def _images(self) -> ImageOperations:
        return ImageOperations(self._live().runner, self.record.dirs)

    async def image_info(
        self, path: str, *, image_format: str | None = None, shared: bool = False
    ) -> ImageInfo:
        """What ``qemu-img info`` says of ``path`` (probed unless ``image_format`` is given)."""
        return await self._images().info(path, image_format=image_format, shared=shared)

    async def real_paths(self, paths: Sequence[str], *, must_exist: bool = True) -> list[str]:
        """Where each of ``paths`` (inside this hypervisor's directories) leads, links followed."""
        return await self._images().real_paths(paths, must_exist=must_exist)

    async def is_regular_file(self, path: str) -> bool:
        return await self._images().is_regular_file(path)

    async def list_images(self) -> list[ListedImage]:
        """Files in the images directory with their qemu-img description (TPM states left out)."""
        return await self._images().list_images(self.record.images_dir, skip=["*.tpm"])

    # -- domains ----------------------------------------------------------------------

    async def define(self, xml: str) -> DomainInfo:
        return await self._libvirt(domains.define, xml)

    async def undefine(self, name: str) -> None:
        await self._libvirt(domains.undefine, name)

    async def start(self, name: str, *, paused: bool = False) -> bool:
        """Start ``name``; ``paused`` keeps its CPUs stopped until :meth:`resume` (many starts at once
        then do not compete with the guests already booting). ``False`` if it was running."""
        return await self._libvirt(domains.start, name, paused)

    async def resume(self, name: str) -> bool:
        """Let a paused domain run; ``False`` if it was not paused."""
        return await self._libvirt(domains.resume, name)

    async def shutdown(self, name: str) -> None:
        await self._libvirt(domains.shutdown, name)

    async def destroy(self, name: str) -> bool:
        return await self._libvirt(domains.destroy, name)

    async def reboot(self, name: str) -> None:
        await self._libvirt(domains.reboot, name)

    async def reset(self, name: str) -> None:
        await self._libvirt(domains.reset, name)

    async def domain_state(self, name: str) -> str:
        return await self._libvirt(domains.domain_state, name)

    async def domain_xml(self, name: str, secure: bool = False, *, inactive: bool = False) -> str:
        return await self._libvirt(domains.domain_xml, name, secure, inactive)

    async def list_domains(self) -> list[DomainInfo]:
        return await self._libvirt(domains.list_domains)

    async def update_device(self, name: str, device_xml: str) -> bool:
        """Change a device in the definition, and live when running; True if it was live."""
        return await self._libvirt(domains.update_device, name, device_xml)

    async def snapshots(self, name: str) -> list[SnapshotInfo]:
        """The domain's (internal) snapshots, oldest first."""
        return await self._libvirt(snapshots.list_snapshots, name)

    async def create_snapshot(self, name: str, snapshot: str, description: str = "") -> SnapshotInfo:
        """Take a snapshot inside the domain's qcow2 disk (with its memory when it runs)."""
        return await self._libvirt(snapshots.create_snapshot, name, snapshot, description)

    async def revert_snapshot(self, name: str, snapshot: str) -> None:
        await self._libvirt(snapshots.revert_snapshot, name, snapshot)

    async def delete_snapshot(self, name: str, snapshot: str) -> None:
        await self._libvirt(snapshots.delete_snapshot, name, snapshot)

    async def begin_backup(self, name: str, disk_path: str, target: str) -> bool:
        """Begin a point-in-time copy of the running ``name``'s disk into the existing qcow2 ``target``
        (see :mod:`app.hyper.backup`); True when the guest's file systems were frozen for it."""
        return await self._libvirt(backup.begin_backup, name, self.confine(disk_path), self.confine(target))

    async def backup_job(self, name: str) -> BackupJob:
        return await self._libvirt(backup.backup_job, name)

    async def backup_outcome(self, name: str) -> str:
        """How the last backup job of ``name`` ended: completed, failed, cancelled or unknown."""
        return await self._libvirt(backup.backup_outcome, name)

    async def backup_targets(self, name: str) -> list[str]:
        """The files the running backup job of ``name`` writes; empty when none runs."""
        return await self._libvirt(backup.backup_targets, name)

    async def abort_backup(self, name: str) -> bool:
        return await self._libvirt(backup.abort_backup, name)

    async def supports_kvm(self) -> bool:
        """Whether this host runs ``kvm`` domains (hardware virtualisation), else only ``qemu`` (TCG)."""
        return await self._libvirt(capabilities.supports_kvm)

    def _host_features(self) -> HostFeatures:
        self._live()
        if self._features is None:
            raise HypervisorUnavailable(f"hypervisor {self.name} is not connected")
        return self._features

    async def capabilities(self) -> HostCapabilities:
        """libvirt's and QEMU's description of what this host runs (read once per connection)."""
        return await self._host_features().capabilities()

    async def trial(self, domain_type: str, feature: str) -> Trial:
        """Whether ``domain_type`` domains with ``feature`` (uefi, smm, host-model,
        host-passthrough) really start on this host; a throw-away domain finds out, once."""
        return await self._host_features().trial(domain_type, feature)

    async def guest_info(self, name: str) -> GuestInfo | None:
        """OS name and IP addresses from the guest agent; ``None`` without an agent answering."""
        return await self._libvirt(agent.guest_info, name)

    async def screenshot_png(self, name: str, max_width: int = 640) -> bytes:
        return await self._libvirt(screenshot.screenshot_png, name, max_width)

    async def spice_endpoint(self, name: str) -> SpiceEndpoint:
        """The display as the dashboard reaches it: always at this hypervisor's console address."""
        return await self._libvirt(
            graphics.spice_endpoint, name, self.record.console_address, self.record.spice_plain
        )

    async def set_spice_password(
        self, name: str, password: str, valid_until: datetime, *, disconnect: bool = False
    ) -> None:
        await self._libvirt(graphics.set_spice_password, name, password, valid_until, disconnect)
