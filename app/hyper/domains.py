"""Domain operations as plain blocking functions of a libvirt connection.

They run on the connection's worker threads (see :mod:`app.hyper.connection`),
never on the event loop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import libvirt

from app.hyper.errors import InvalidDomainState

# libvirt's virDomainState -> the state names stored in ``vms.state``.
# "blocked" (waiting on a resource) and "in shutdown" are still running domains.
STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# Everything libvirt keeps beside the definition goes with it: UEFI variable store,
# managed-save image, snapshot and checkpoint metadata.
UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: str
    persistent: bool


def state_name(code: int) -> str:
    return STATE_NAMES.get(code, "unknown")


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    return conn.lookupByName(name)


def info(domain: libvirt.virDomain) -> DomainInfo:
    state, _reason = domain.state()
    return DomainInfo(
        name=domain.name(),
        uuid=domain.UUIDString(),
        state=state_name(state),
        persistent=bool(domain.isPersistent()),
    )


def define(conn: libvirt.virConnect, xml: str) -> DomainInfo:
    try:
        # Validate against libvirt's schema: a typo fails here, not at the first start.
        domain = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise
        domain = conn.defineXML(xml)
    return info(domain)


def undefine(conn: libvirt.virConnect, name: str) -> None:
    domain = lookup(conn, name)
    if domain.isActive():
        raise InvalidDomainState(f"domain {name!r} is running; power it off before removing its definition")
    try:
        domain.undefineFlags(UNDEFINE_FLAGS)
    except libvirt.libvirtError as exc:
        # Drivers without checkpoints (and the test driver) refuse unknown flags.
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        domain.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )


def start(conn: libvirt.virConnect, name: str, paused: bool = False) -> bool:
    """Start the domain; ``False`` if it was already running.

    ``paused``: its CPUs wait for :func:`resume`.
    """
    domain = lookup(conn, name)
    if domain.isActive():
        return False
    domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
    return True


def resume(conn: libvirt.virConnect, name: str) -> bool:
    """Let a paused domain's CPUs run; ``False`` if it was not paused."""
    domain = lookup(conn, name)
    try:
        domain.resume()
    except libvirt.libvirtError as exc:
        # One round trip, not two: asking the state first costs as much as resuming.
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return False
        raise
    return True


def shutdown(conn: libvirt.virConnect, name: str) -> None:
    """Ask the guest to shut down; returns at once.

    Through the QEMU guest agent where one answers in the guest (it works even when
    the guest ignores the ACPI power button), else the ACPI power button: libvirt
    tries the agent first and falls back to ACPI.
    """
    domain = lookup(conn, name)
    try:
        domain.shutdownFlags(
            libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT | libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
        )
    except libvirt.libvirtError as exc:
        # Drivers without a power button (the test driver) take the default method.
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        domain.shutdown()


def destroy(conn: libvirt.virConnect, name: str) -> bool:
    """Force the domain off; ``False`` if it was not running."""
    domain = lookup(conn, name)
    if not domain.isActive():
        return False
    try:
        domain.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
    except libvirt.libvirtError as exc:
        # A qemu that ignores SIGTERM for long: insist.
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_FAILED:
            raise
        domain.destroy()
    return True


def reboot(conn: libvirt.virConnect, name: str) -> None:
    """Ask the guest to reboot (ACPI)."""
    lookup(conn, name).reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)


def reset(conn: libvirt.virConnect, name: str) -> None:
    """Hard reset, like the reset button: the guest gets no say."""
    lookup(conn, name).reset(0)


def domain_state(conn: libvirt.virConnect, name: str) -> str:
    state, _reason = lookup(conn, name).state()
    return state_name(state)


def domain_state_by_uuid(conn: libvirt.virConnect, uuid: str) -> str | None:
    """Current state, or ``None`` if the domain no longer exists."""
    try:
        domain = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    state, _reason = domain.state()
    return state_name(state)


def domain_xml(conn: libvirt.virConnect, name: str, secure: bool = False, inactive: bool = False) -> str:
    flags = libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
    if inactive:
        flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
    return str(lookup(conn, name).XMLDesc(flags))


def update_device(conn: libvirt.virConnect, name: str, device_xml: str) -> bool:
    """Change a device (a CD-ROM's medium ...) in the definition, and live if the domain runs.

    Returns whether the running domain was changed too. Whether it runs is decided
    here, next to the call, so a domain started meanwhile still gets the change live.
    """
    domain = lookup(conn, name)
    live = bool(domain.isActive())
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
    domain.updateDeviceFlags(device_xml, flags)
    return live


def list_domains(conn: libvirt.virConnect) -> list[DomainInfo]:
    found = []
    for domain in conn.listAllDomains(0):
        # A domain undefined between the listing and the query is simply skipped.
        with contextlib.suppress(libvirt.libvirtError):
            found.append(info(domain))
    return sorted(found, key=lambda d: d.name)
