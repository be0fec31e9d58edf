"""Each device builder against its golden XML: what libvirt is told, element by element."""

from __future__ import annotations

import pytest

from app.vms.devices import channels, cpu, disks, firmware, graphics, network, sound, tpm, usb, video
from app.vms.domain_xml import DevicePolicy, DomainDefinition, UefiSpec, build_domain_xml
from tests.vms.golden import assert_golden

SECURE_UEFI = UefiSpec(
    loader="/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
    nvram_template="/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
    nvram_path="/srv/images/win11.VARS.fd",
    secure_boot=True,
    requires_smm=True,
)


def test_disk_on_each_bus_with_its_cache_mode() -> None:
    assert_golden("disk-virtio", disks.disk(disks.DiskSpec("/srv/images/desk01.qcow2", boot_index=1)))
    assert_golden(
        "disk-sata-writeback", disks.disk(disks.DiskSpec("/srv/images/a.qcow2", "sata", "writeback"))
    )
    assert_golden("disk-scsi-none", disks.disk(disks.DiskSpec("/srv/images/a.qcow2", "scsi", "none", 2)))
    assert_golden("controller-scsi", disks.scsi_controller())


def test_cdrom_drives_are_ide_on_pc_and_sata_on_q35_and_never_share_the_disk_target() -> None:
    assert_golden("cdrom-pc-empty", disks.cdrom(disks.CdromSpec(0)))
    assert_golden(
        "cdrom-q35-second-boot", disks.cdrom(disks.CdromSpec(1, "q35", "/iso/virtio-win.iso", boot_index=2))
    )
    targets = {disks.CdromSpec(slot, machine).target for slot in (0, 1) for machine in ("pc", "q35")}
    assert targets == {"hdc", "hdd", "sdb", "sdc"}


def test_network_card_on_a_bridge_or_a_libvirt_network() -> None:
    assert_golden("interface-bridge-virtio", network.interface(network.NicSpec("br0", "52:54:00:12:34:56")))
    assert_golden(
        "interface-network-e1000e-boot",
        network.interface(network.NicSpec("default", "52:54:00:ab:cd:ef", "network", "e1000e", 3)),
    )


def test_spice_is_locked_and_refuses_clipboard_and_file_transfer_unless_allowed() -> None:
    assert_golden("graphics-policy-off", graphics.spice(graphics.SpiceSpec("10.0.0.5", "p4ss")))
    # Plain SPICE only where the hypervisor allows it for old clients: then both ports.
    assert_golden(
        "graphics-plain-allowed", graphics.spice(graphics.SpiceSpec("10.0.0.5", "p4ss", plain=True))
    )
    assert_golden(
        "graphics-policy-on",
        graphics.spice(graphics.SpiceSpec("10.0.0.5", "p4ss", clipboard=True, file_transfer=True)),
    )


def test_video_has_one_to_four_heads() -> None:
    assert_golden("video-1-head", video.qxl(1))
    assert_golden("video-4-heads", video.qxl(4))
    for heads in (0, 5):
        with pytest.raises(ValueError, match="1 to 4"):
            video.qxl(heads)


def test_sound_card_or_none() -> None:
    assert sound.sound("none") is None
    card = sound.sound("ich9")
    assert card is not None
    assert_golden("sound-ich9", card)


def test_agent_channels_usb_and_redirection_slots() -> None:
    assert_golden("channel-guest-agent", channels.guest_agent())
    assert_golden("channel-spice-agent", channels.spice_agent())
    assert_golden("controller-usb", usb.controller())
    assert usb.redirections(0) == []
    slots = usb.redirections(2)
    assert len(slots) == 2
    assert_golden("redirdev", slots[0])
    with pytest.raises(ValueError):
        usb.redirections(5)


def test_tpm_is_an_external_swtpm_socket() -> None:
    assert_golden("tpm-external", tpm.tpm(tpm.TpmSpec("/srv/volatile/win11.swtpm.sock")))


def test_cpu_modes_keep_the_topology() -> None:
    assert_golden("cpu-default", cpu.cpu("default", 2, 3))
    assert_golden("cpu-host-passthrough", cpu.cpu("host-passthrough", 1, 4))
    assert_golden("cpu-host-model", cpu.cpu("host-model", 1, 1))


def test_os_is_bios_or_explicit_uefi_with_the_vms_own_nvram() -> None:
    assert_golden("os-bios-pc", firmware.os_element("pc", None))
    assert_golden("os-uefi-q35-secure", firmware.os_element("q35", SECURE_UEFI))
    assert_golden("features-windows-smm", firmware.features(windows=True, smm=True))
    assert_golden("features-linux", firmware.features(windows=False, smm=False))


def _definition(**overrides: object) -> DomainDefinition:
    values: dict[str, object] = {
        "name": "desk01",
        "uuid": "5a4a3b52-64d2-4a4e-9d34-2a1f6c1b7e01",
        "domain_type": "kvm",
        "vcpu_sockets": 1,
        "vcpu_cores": 2,
        "memory_mib": 2048,
        "disk_source": "/srv/images/desk01.qcow2",
        "spice_listen": "10.0.0.5",
        "spice_password": "p4ss",
    }
    values.update(overrides)
    return DomainDefinition(**values)  # type: ignore[arg-type]


def test_a_default_desktop_is_a_bios_pc_without_network_sound_or_client_devices() -> None:
    assert_golden("domain-default", build_domain_xml(_definition()))


def test_a_windows_11_desktop_has_uefi_secure_boot_tpm_two_cdroms_and_its_policy() -> None:
    xml = build_domain_xml(
        _definition(
            name="win11",
            domain_type="qemu",
            os_type="windows",
            machine="q35",
            uefi=SECURE_UEFI,
            tpm_socket="/srv/volatile/win11.swtpm.sock",
            disk_source="/srv/images/win11.qcow2",
            disk_bus="sata",
            disk_cache="none",
            iso_path="/iso/win11.iso",
            iso2_path="/iso/virtio-win.iso",
            boot_order=("hd", "cdrom", "cdrom2"),
            network="br0",
            mac_address="52:54:00:12:34:56",
            nic_model="e1000e",
            sound="ich9",
            video_heads=2,
            policy=DevicePolicy(clipboard=True, file_transfer=False, usb_redirections=2),
        )
    )
    assert_golden("domain-windows11", xml)
