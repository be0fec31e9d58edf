"""Every hardware option the dashboard offers is accepted by the real libvirt of the suite's hypervisors.

Each definition is validated against libvirt's schema and its QEMU driver (define,
then undefine): every value of every option appears, machine type by firmware by
disk bus all together, so a combination the form allows cannot fail only at the
first start on a customer's hypervisor.
"""

from __future__ import annotations

import itertools
import uuid as uuidlib
from collections.abc import Iterator

import libvirt
import pytest

from app.vms.devices.cpu import CPU_MODES
from app.vms.devices.disks import DISK_BUSES, DISK_CACHES
from app.vms.devices.network import NETWORK_TYPES, NIC_MODELS
from app.vms.devices.sound import SOUND_MODELS
from app.vms.domain_xml import DevicePolicy, DomainDefinition, UefiSpec, build_domain_xml
from tests.services.libvirt_host import LibvirtHost

OVMF = "/usr/share/OVMF"


def uefi(name: str, *, secure: bool, directory: str) -> UefiSpec:
    if secure:
        return UefiSpec(
            f"{OVMF}/OVMF_CODE_4M.ms.fd",
            f"{OVMF}/OVMF_VARS_4M.ms.fd",
            f"{directory}/{name}.VARS.fd",
            True,
            True,
        )
    return UefiSpec(f"{OVMF}/OVMF_CODE_4M.fd", f"{OVMF}/OVMF_VARS_4M.fd", f"{directory}/{name}.VARS.fd")


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.service) for name in ("hypervisor_host", "second_hypervisor")
    ]
)
def host(request: pytest.FixtureRequest) -> LibvirtHost:
    """Each hypervisor of the suite (h0, and h1 in its own network namespace)."""
    found: LibvirtHost = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def conn(host: LibvirtHost) -> Iterator[libvirt.virConnect]:
    connection = libvirt.open(host.local_uri)
    try:
        yield connection
    finally:
        connection.close()


def definitions(images: str) -> Iterator[DomainDefinition]:
    tag = "dev" + uuidlib.uuid4().hex[:6]
    count = itertools.count()

    def make(**values: object) -> DomainDefinition:
        name = f"{tag}-{next(count)}"
        base: dict[str, object] = {
            "name": name,
            "uuid": str(uuidlib.uuid4()),
            "domain_type": "qemu",
            "vcpu_sockets": 1,
            "vcpu_cores": 1,
            "memory_mib": 64,
            "disk_source": f"{images}/{name}.qcow2",
            "spice_listen": "127.0.0.1",
        }
        base.update(values)
        firmware = base.pop("firmware", None)
        if firmware is not None:
            base["uefi"] = uefi(name, secure=firmware == "secure", directory=images)
        return DomainDefinition(**base)  # type: ignore[arg-type]

    # Machine type by firmware by disk bus, all together.
    for machine, firmware, bus in itertools.product(("pc", "q35"), ("bios", "uefi", "secure"), DISK_BUSES):
        if firmware == "secure" and machine == "pc":
            continue  # Secure Boot needs SMM, which libvirt offers on q35 only (the form refuses it).
        yield make(machine=machine, firmware=None if firmware == "bios" else firmware, disk_bus=bus)
    # Every other option, each value at least once.
    for cache in DISK_CACHES:
        yield make(disk_cache=cache)
    for model, kind in itertools.product(NIC_MODELS, NETWORK_TYPES):
        source = "br0" if kind == "bridge" else "default"
        yield make(network=source, network_type=kind, nic_model=model, boot_order=("network", "hd"))
    for sound in SOUND_MODELS:
        yield make(sound=sound, machine="q35")
    for heads in (1, 2, 3, 4):
        yield make(video_heads=heads)
    for mode in CPU_MODES:
        yield make(cpu_mode=mode, domain_type="kvm")
    for machine in ("pc", "q35"):
        yield make(
            machine=machine,
            iso_path="/iso/install.iso",
            iso2_path="/iso/drivers.iso",
            boot_order=("cdrom", "cdrom2", "hd"),
            tpm_socket=f"{images}/tpm.sock",
            policy=DevicePolicy(clipboard=True, file_transfer=True, usb_redirections=4),
            os_type="windows",
        )


def test_every_offered_combination_is_a_valid_definition_for_real_libvirt(
    conn: libvirt.virConnect, host: LibvirtHost
) -> None:
    defined = 0
    for definition in definitions(str(host.images_dir)):
        xml = build_domain_xml(definition)
        try:
            domain = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            pytest.fail(f"libvirt refused {definition}: {exc}\n{xml}")
        try:
            assert domain.name() == definition.name
            defined += 1
        finally:
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    assert defined >= 30


def test_an_invalid_combination_is_refused_by_libvirt_so_the_check_above_can_fail(
    hypervisor_host: LibvirtHost,
) -> None:
    conn = libvirt.open(hypervisor_host.local_uri)
    try:
        _define_invalid(conn, hypervisor_host)
    finally:
        conn.close()


def _define_invalid(conn: libvirt.virConnect, hypervisor_host: LibvirtHost) -> None:
    bad = DomainDefinition(
        name="dev-bad-" + uuidlib.uuid4().hex[:6],
        uuid=str(uuidlib.uuid4()),
        domain_type="qemu",
        vcpu_sockets=1,
        vcpu_cores=1,
        memory_mib=64,
        disk_source=f"{hypervisor_host.images_dir}/bad.qcow2",
        spice_listen="127.0.0.1",
        machine="pc",
        uefi=uefi("bad", secure=True, directory=str(hypervisor_host.images_dir)),
    )
    with pytest.raises(libvirt.libvirtError):
        domain = conn.defineXMLFlags(build_domain_xml(bad), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
