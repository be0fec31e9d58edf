"""From a VM's hardware (a create request, or a VM row) to its domain definition.

:func:`placement_of` decides where the hardware runs (KVM or TCG, which UEFI
image), :func:`definition_for` resolves everything the XML says, and
:func:`hardware_columns` is what a new VM row stores (VDI children inherit it).
"""

from __future__ import annotations

from typing import TypeVar

from app.hyper import Hypervisor
from app.i18n import gettext as _
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.devices.cpu import CPU_MODES, CpuMode
from app.vms.devices.disks import DISK_BUSES, DISK_CACHES, DISK_FORMATS
from app.vms.devices.network import NIC_MODELS
from app.vms.devices.sound import SOUND_MODELS
from app.vms.domain_xml import DevicePolicy, DomainDefinition, UefiSpec
from app.vms.errors import HypervisorFailure
from app.vms.machine import MachineNeeds, Placement, place
from app.vms.parameters import Hardware, spice_listen_of
from app.vms.records import Vm


def needs_of(hardware: Hardware | Vm) -> MachineNeeds:
    return MachineNeeds(
        machine=hardware.machine,
        firmware=hardware.firmware,
        secure_boot=hardware.secure_boot,
        tpm=hardware.tpm,
        cpu_mode=hardware.cpu_mode,
    )


async def placement_of(ctx: VmContext, hv: Hypervisor, hardware: Hardware | Vm) -> Placement:
    """Where (KVM or TCG) and with which firmware image this hardware runs on ``hv``."""
    return await place(hv, needs_of(hardware), ctx.settings.domain_type)


def definition_for(
    vm_name: str,
    uuid: str,
    hardware: Hardware | Vm,
    *,
    placement: Placement,
    disk_source: str,
    hv: Hypervisor,
    mac_address: str | None,
    disk_format: str | None = None,
) -> DomainDefinition:
    """The domain of a VM; ``disk_format`` defaults to the VM's recorded one (qcow2 for a new disk)."""
    boot = hardware.boot_devices if isinstance(hardware, Vm) else tuple(hardware.boot_order)
    paths = firmware_state.state_paths(hv, vm_name)
    uefi = None
    if hardware.firmware == "uefi":
        image = placement.firmware
        if image is None:
            raise HypervisorFailure(
                _("no UEFI firmware image was chosen for {vm_name}").format(vm_name=vm_name)
            )
        uefi = UefiSpec(
            loader=image.code,
            nvram_template=image.vars_template,
            nvram_path=paths.nvram,
            secure_boot=hardware.secure_boot,
            requires_smm=image.requires_smm,
        )
    policy = (
        hardware.policy
        if isinstance(hardware, Vm)
        else DevicePolicy(hardware.clipboard, hardware.file_transfer, hardware.usb_redirect)
    )
    return DomainDefinition(
        name=vm_name,
        uuid=uuid,
        domain_type="kvm" if placement.domain_type == "kvm" else "qemu",
        vcpu_sockets=hardware.vcpu_sockets,
        vcpu_cores=hardware.vcpu_cores,
        memory_mib=hardware.memory_mib,
        disk_source=disk_source,
        spice_listen=spice_listen_of(hv.record),
        spice_plain=hv.record.spice_plain,
        iso_path=hardware.iso_path,
        iso2_path=hardware.iso2_path,
        boot_order=boot,
        network=hardware.network,
        network_type="network" if hardware.network_type == "network" else "bridge",
        mac_address=mac_address,
        os_type=hardware.os_type,
        machine="q35" if hardware.machine == "q35" else "pc",
        uefi=uefi,
        tpm_socket=paths.socket if hardware.tpm else None,
        cpu_mode=_cpu_mode(hardware.cpu_mode),
        disk_bus=_choice(hardware.disk_bus, DISK_BUSES),
        disk_cache=_choice(hardware.disk_cache, DISK_CACHES),
        disk_format=_choice(
            disk_format or (hardware.disk_format if isinstance(hardware, Vm) else "qcow2"), DISK_FORMATS
        ),
        nic_model=_choice(hardware.nic_model, NIC_MODELS),
        sound=_choice(hardware.sound_model, SOUND_MODELS),
        video_heads=hardware.video_heads,
        policy=policy,
    )


C = TypeVar("C", bound=str)


def _choice(value: str, allowed: tuple[C, ...]) -> C:
    """A stored value as one of ``allowed`` (rows written by an older version hold the default)."""
    for option in allowed:
        if option == value:
            return option
    return allowed[0]


def _cpu_mode(value: str) -> CpuMode:
    return _choice(value, CPU_MODES)


def hardware_columns(hardware: Hardware | Vm) -> dict[str, object]:
    """The machine, hardware and policy columns of a new VM row, as ``hardware`` has them."""
    columns = {
        name: getattr(hardware, name)
        for name in (
            "machine",
            "firmware",
            "secure_boot",
            "tpm",
            "cpu_mode",
            "disk_bus",
            "disk_cache",
            "nic_model",
            "network_type",
            "sound_model",
            "video_heads",
            "clipboard",
            "file_transfer",
            "usb_redirect",
        )
    }
    if isinstance(hardware, Vm):
        columns.update(clipboard=hardware.clipboard, file_transfer=hardware.file_transfer)
        columns["usb_redirect"] = hardware.usb_redirect
    else:
        columns.update(
            clipboard=hardware.clipboard,
            file_transfer=hardware.file_transfer,
            usb_redirect=hardware.usb_redirect,
        )
    return columns
