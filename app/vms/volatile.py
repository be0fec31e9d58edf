"""Volatile desktops: every boot runs on a throw-away overlay; the VM's own disk never changes.

Mechanism: before each start of a volatile VM the dashboard (re)creates
``<volatile_dir>/<name>.volatile.qcow2`` backed by the VM's disk, and the
persistent definition's disk source points at that overlay; when the VM stops
(lifecycle event, or found stopped on reconnect) the overlay is removed. The
overlay therefore lives in the hypervisor's volatile directory (a separate,
fast disk if the admin wants), which libvirt's ``<transient/>`` disks cannot do
(they always put the overlay next to the image), and no code runs on the
hypervisor besides ``qemu-img``, ``rm`` and libvirt.

The same goes for a UEFI desktop's variable store and a TPM desktop's TPM state
(see :mod:`app.vms.firmware_state`): each volatile boot runs on copies of the
saved ones, removed with the overlay. A guest reboot keeps its QEMU process and
so its overlay; only a power-off discards the changes. Started outside the
dashboard after a stop, a volatile VM fails to start (its overlay is gone)
rather than silently writing its disk.
"""

from __future__ import annotations

import logging
import secrets
import xml.etree.ElementTree as ET

from app.hyper import DomainNotFound, Hypervisor, HypervisorError
from app.i18n import gettext as _
from app.vms import firmware_state
from app.vms.alignment import BootTarget, align
from app.vms.context import VmContext
from app.vms.disks import create_overlays
from app.vms.domain_xml import EXPIRED
from app.vms.errors import HypervisorFailure, domain_missing
from app.vms.parameters import volatile_overlay_path
from app.vms.records import Vm

log = logging.getLogger("kvmvdi.vms.volatile")


def overlay_of(vm: Vm, hv: Hypervisor) -> str:
    return volatile_overlay_path(hv.record.volatile_dir, vm.name)


def spice_locked(xml: str) -> str:
    """The domain XML with every SPICE/VNC display password-protected (a fresh, expired one if none)."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own output
    for graphics in root.findall("devices/graphics"):
        if graphics.get("type") in ("spice", "vnc") and not graphics.get("passwd"):
            graphics.set("passwd", secrets.token_urlsafe(24))
            graphics.set("passwdValidTo", EXPIRED)
    return ET.tostring(root, encoding="unicode")


def boot_target(vm: Vm, hv: Hypervisor, *, volatile: bool) -> BootTarget:
    """What this boot's definition must say: its disk, its variable store, the VM's device policy."""
    disk = overlay_of(vm, hv) if volatile else (vm.disk_path or None)
    nvram = firmware_state.state_paths(hv, vm.name).boot_nvram(volatile) if vm.firmware == "uefi" else None
    # An overlay is qcow2 whatever its base; a domain adopted as it is keeps its own driver.
    disk_format = "qcow2" if volatile else (None if vm.kind == "unclassified" else vm.disk_format)
    return BootTarget(disk, nvram, vm.policy, disk_format)


async def align_definition(hv: Hypervisor, name: str, target: BootTarget) -> bool:
    """Bring the persistent definition in line with ``target``; True when it had to be redefined.

    One read of the persistent definition; a redefinition only when something differs.
    """
    try:
        xml = await hv.domain_xml(name, secure=True, inactive=True)
    except DomainNotFound as exc:
        raise domain_missing(name, hv.name) from exc
    except HypervisorError as exc:
        raise HypervisorFailure(
            _("reading the definition of {name} failed: {exc}").format(name=name, exc=exc)
        ) from exc
    aligned = align(xml, target)
    if aligned is None:
        return False
    try:
        await hv.define(spice_locked(aligned))
    except HypervisorError as exc:
        raise HypervisorFailure(f"redefining {name} failed: {exc}") from exc
    return True


async def prepare_boot(vm: Vm, hv: Hypervisor, *, volatile: bool) -> None:
    """Before starting ``vm``: a fresh overlay and firmware-state copies if volatile, the definition
    pointing at the right files with the VM's device policy, and its TPM's swtpm running."""
    if volatile:
        await create_overlays(hv, vm.disk_path, [overlay_of(vm, hv)], base_format=vm.disk_format)
        await firmware_state.prepare_volatile_copies(hv, vm)
    await align_definition(hv, vm.name, boot_target(vm, hv, volatile=volatile))
    if vm.tpm:
        await firmware_state.start_swtpm(hv, vm, volatile=volatile)


def boot_leftovers(vm: Vm, hv: Hypervisor) -> list[str]:
    """Files one volatile boot leaves behind (its overlay, firmware-state copies)."""
    return [overlay_of(vm, hv), *firmware_state.volatile_files(hv, vm)]


async def apply_flag(vm: Vm, hv: Hypervisor) -> None:
    """After the volatile flag changed: redefine now if the VM is off (else at its next start)."""
    if vm.running or not vm.disk_path:
        return
    await align_definition(hv, vm.name, boot_target(vm, hv, volatile=vm.volatile))


async def discard_after_stop(ctx: VmContext, vm: Vm, hv: Hypervisor) -> bool:
    """Remove the VM's overlay once it is really stopped; True when removed."""
    async with ctx.overlay_lock(vm.id):
        try:
            state = await hv.domain_state(vm.name)
        except HypervisorError as exc:
            log.debug("state of %s unknown (%s); removing its overlay", vm.name, exc)
            state = "shutoff"
        if state in ("running", "paused", "pmsuspended"):
            return False
        await firmware_state.remove(hv, boot_leftovers(vm, hv))
        return True


async def discard_stopped(hv: Hypervisor, stopped: list[Vm]) -> None:
    """On reconnect: remove the overlays of every VM found stopped, in one command."""
    await firmware_state.remove(hv, [path for vm in stopped for path in boot_leftovers(vm, hv)])
