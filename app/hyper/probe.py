"""The admin's "check" of a hypervisor: can the dashboard reach it, and what is it?

:func:`probe` opens a throw-away connection exactly as the registry would (SSH
with the pinned host key and the dashboard's key, then libvirt), reports the
host's facts and anything missing, or one classified reason why it failed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.hyper.disks import DiskOperations
from app.hyper.errors import HypervisorError
from app.hyper.features import HostFeatures
from app.hyper.placement import offers
from app.hyper.records import HypervisorRecord
from app.hyper.session import HOST_KEY_UNCONFIRMED, ConnectFailure, Session, open_session
from app.hyper.spice_tls import SpiceTls
from app.hyper.sshkeys import DashboardKey, KnownHostsFile, fingerprint


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    # One of app.hyper.session's reason codes when not ok: auth_refused, host_key_mismatch,
    # host_key_unconfirmed, timeout, unreachable, libvirt_unavailable, misconfigured.
    reason: str | None
    message: str
    libvirt_version: str = ""
    hypervisor_version: str = ""
    hostname: str = ""
    cpus: int | None = None
    memory_mib: int | None = None
    images_free_bytes: int | None = None
    host_key_fingerprint: str = ""
    # Things that work but need the admin's attention (a missing directory ...).
    warnings: list[str] = field(default_factory=list)
    # The SPICE certificate: "valid until ..." or why it is not usable ("" when not looked at).
    spice_certificate: str = ""
    elapsed: float = 0.0
    # With ``desktops=True``: what VMs there can have (see app.hyper.placement.offers).
    desktops: dict[str, Any] | None = None


async def probe(
    record: HypervisorRecord,
    key: DashboardKey,
    known_hosts: KnownHostsFile,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 -- per step (SSH, libvirt), not overall
    spice_tls: SpiceTls | None = None,
    issue: bool = False,
    desktops: bool = False,
) -> ProbeResult:
    """``spice_tls``: also look at the SPICE certificate, and with ``issue`` install one when it is
    missing, foreign or due (the admin's "check"; ``kvm-vdi check`` only looks)."""
    started = time.monotonic()
    key_fingerprint = fingerprint(record.host_key) if record.host_key else ""
    blocked = record.not_connectable_reason()
    if blocked:
        code = HOST_KEY_UNCONFIRMED if "host key" in blocked.msgid else "misconfigured"
        message = blocked.text() + (f" ({key_fingerprint})" if key_fingerprint else "")
        return ProbeResult(False, code, message, host_key_fingerprint=key_fingerprint)
    with tempfile.TemporaryDirectory(prefix="kvmvdi-probe-") as scratch:
        pinned = _known_hosts_for(record, known_hosts, Path(scratch))
        try:
            session = await open_session(record, key, pinned, connect_timeout=timeout, threads=1)
        except ConnectFailure as failure:
            return ProbeResult(
                False,
                failure.code,
                failure.message,
                host_key_fingerprint=key_fingerprint,
                elapsed=time.monotonic() - started,
            )
        try:
            inspection = _inspect(
                record, session, key_fingerprint, started, spice_tls, issue, desktops=desktops
            )
            return await asyncio.wait_for(inspection, timeout * 3)
        except TimeoutError:
            return ProbeResult(
                False, "timeout", "connected, but the hypervisor answered too slowly", elapsed=timeout * 3
            )
        finally:
            await session.close()


def _known_hosts_for(record: HypervisorRecord, known_hosts: KnownHostsFile, scratch: Path) -> KnownHostsFile:
    """The dashboard's known_hosts if it already pins this record's key; else a private one that does.

    The admin may check a hypervisor right after confirming its key, before the
    registry rewrote the shared file.
    """
    entry = record.known_hosts_entry()
    if entry is None:
        return known_hosts
    try:
        if entry in known_hosts.path.read_text().splitlines():
            return known_hosts
    except OSError:
        pass
    private = KnownHostsFile(scratch)
    private.write([entry])
    return private


async def _inspect(
    record: HypervisorRecord,
    session: Session,
    key_fingerprint: str,
    started: float,
    spice_tls: SpiceTls | None,
    issue: bool,
    *,
    desktops: bool = False,
) -> ProbeResult:
    facts = await session.facts()
    disks = DiskOperations(session.runner, record.dirs)
    warnings: list[str] = []
    free: int | None = None
    labelled = (("images", record.images_dir), ("volatile", record.volatile_dir), ("ISO", record.iso_dir))
    for label, directory in labelled:
        argv = ["test", "-d", directory, "-a", "-w", directory]
        result = await session.runner.run(argv, check=False, timeout=30)
        if result.exit_status != 0:
            who = record.ssh_user if record.is_ssh else "the dashboard"
            warnings.append(f"the {label} directory {directory} is missing or not writable by {who}")
    try:
        free = await disks.free_bytes(record.images_dir)
    except HypervisorError as exc:
        warnings.append(f"free space of {record.images_dir} unknown: {exc}")
    qemu_img = await session.runner.run(["qemu-img", "--version"], check=False, timeout=30)
    if qemu_img.exit_status != 0:
        warnings.append("qemu-img is not installed (apt install qemu-utils)")
    certificate = ""
    if spice_tls is not None and spice_tls.applies_to(record):
        try:
            state = await (spice_tls.ensure if issue else spice_tls.state)(session.runner, record)
            certificate = state.reason
        except (HypervisorError, ValueError) as exc:
            certificate = f"could not be installed: {exc}"
            state = None
        if state is None or not state.valid:
            warnings.append(f"SPICE over TLS: {certificate} (run hypervisors/install.sh there)")
        elif state.due():
            warnings.append(f"SPICE over TLS: the certificate is {certificate}: press Check to renew it")
    offered: dict[str, Any] | None = None
    if desktops:
        try:
            offered = await offers(HostFeatures(session.libvirt.call, session.runner, record.volatile_dir))
        except HypervisorError as exc:
            warnings.append(f"what desktops can run there is unknown: {exc}")
    return ProbeResult(
        True,
        None,
        f"connected: libvirt {facts.libvirt_version} on {facts.hostname}, {facts.cpus} CPUs, "
        f"{facts.memory_mib} MiB",
        libvirt_version=facts.libvirt_version,
        hypervisor_version=facts.hypervisor_version,
        hostname=facts.hostname,
        cpus=facts.cpus,
        memory_mib=facts.memory_mib,
        images_free_bytes=free,
        host_key_fingerprint=key_fingerprint,
        warnings=warnings,
        elapsed=time.monotonic() - started,
        spice_certificate=certificate,
        desktops=offered,
    )
