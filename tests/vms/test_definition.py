"""Domain definitions: bad parameters are refused naming their field; the XML is what a VDI needs."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # our own output, not untrusted input

import libvirt
import pytest

from app.vms.domain_xml import DomainDefinition, build_domain_xml, new_uuid, random_mac, read_domain_facts
from app.vms.parameters import DefinitionError, NewBatch, NewVm, batch_names, check_placement, parse


def definition(**overrides: object) -> DomainDefinition:
    values: dict[str, object] = {
        "name": "desk01",
        "uuid": new_uuid(),
        "domain_type": "kvm",
        "vcpu_sockets": 2,
        "vcpu_cores": 3,
        "memory_mib": 2048,
        "disk_source": "/srv/images/desk01.qcow2",
        "spice_listen": "10.0.0.5",
    }
    values.update(overrides)
    return DomainDefinition(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "bad name", "hypervisor_id": 1}, "name"),
        ({"name": "x" * 65, "hypervisor_id": 1}, "name"),
        ({"name": "ok", "hypervisor_id": 0}, "hypervisor_id"),
        ({"name": "ok", "hypervisor_id": 1, "memory_mib": 16}, "memory_mib"),
        ({"name": "ok", "hypervisor_id": 1, "vcpu_sockets": 0}, "vcpu_sockets"),
        ({"name": "ok", "hypervisor_id": 1, "vcpu_cores": "many"}, "vcpu_cores"),
        ({"name": "ok", "hypervisor_id": 1, "disk_size_gib": 0}, "disk_size_gib"),
        ({"name": "ok", "hypervisor_id": 1, "boot_order": ["hd", "hd"]}, "boot_order"),
        ({"name": "ok", "hypervisor_id": 1, "boot_order": ["floppy"]}, "boot_order"),
        ({"name": "ok", "hypervisor_id": 1, "boot_order": ["network"]}, "boot_order"),
        ({"name": "ok", "hypervisor_id": 1, "network": "br0; rm -rf /"}, "network"),
        ({"name": "ok", "hypervisor_id": 1, "iso_path": "relative.iso"}, "iso_path"),
        ({"name": "ok", "hypervisor_id": 1, "os_type": "beos"}, "os_type"),
        ({"name": "ok", "hypervisor_id": 1, "colour": "red"}, "colour"),
    ],
)
def test_every_invalid_parameter_is_refused_with_an_error_naming_its_field(data: dict, field: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        parse(NewVm, data)
    assert field in raised.value.errors, raised.value.errors
    assert raised.value.errors[field]


def test_several_bad_fields_are_all_reported_at_once() -> None:
    with pytest.raises(DefinitionError) as raised:
        parse(NewVm, {"name": "no spaces", "hypervisor_id": 1, "memory_mib": 1, "vcpu_cores": 0})
    assert set(raised.value.errors) == {"name", "memory_mib", "vcpu_cores"}


def test_batch_names_are_zero_padded_and_stay_within_64_characters() -> None:
    assert batch_names("desk", 3) == ["desk01", "desk02", "desk03"]
    assert batch_names("lab", 120)[0] == "lab001"
    assert parse(NewBatch, {"prefix": "pc", "count": 12, "hypervisor_id": 1}).names()[-1] == "pc12"
    with pytest.raises(DefinitionError) as raised:
        batch_names("p" * 63, 10)
    assert "prefix" in raised.value.errors


def test_disk_must_be_a_qcow2_inside_the_images_directory_and_iso_must_be_offered() -> None:
    assert (
        check_placement(disk_path="/srv/images/a.qcow2", images_dir="/srv/images", iso_path=None, isos=None)
        == {}
    )
    for bad in (
        "/srv/images/../etc/a.qcow2",
        "/srv/other/a.qcow2",
        "/srv/images/a.raw",
        "srv/images/a.qcow2",
    ):
        errors = check_placement(disk_path=bad, images_dir="/srv/images", iso_path=None, isos=None)
        assert "disk_path" in errors, bad
    errors = check_placement(
        disk_path="/srv/images/a.qcow2", images_dir="/srv/images", iso_path="/iso/x.iso", isos=["/iso/y.iso"]
    )
    assert errors == {"iso_path": "choose an ISO from the hypervisor's list"}


def test_xml_has_topology_spice_locked_by_an_expired_password_and_the_vdi_devices() -> None:
    mac = random_mac()
    root = ET.fromstring(  # noqa: S314
        build_domain_xml(
            definition(
                iso_path="/iso/inst.iso",
                boot_order=("cdrom", "hd", "network"),
                network="br0",
                mac_address=mac,
            )
        )
    )
    assert root.get("type") == "kvm"
    assert root.findtext("vcpu") == "6"
    topology = root.find("cpu/topology")
    assert topology is not None and (topology.get("sockets"), topology.get("cores")) == ("2", "3")
    cpu = root.find("cpu")
    assert cpu is not None and cpu.get("mode") is None, "default CPU model, never host-passthrough"
    graphics = root.find("devices/graphics")
    assert graphics is not None and graphics.get("type") == "spice" and graphics.get("autoport") == "yes"
    assert len(graphics.get("passwd", "")) >= 24
    assert graphics.get("passwdValidTo", "9999") < "2001", "the initial password is expired from the start"
    listen = graphics.find("listen")
    assert listen is not None and listen.get("address") == "10.0.0.5"
    assert graphics.find("image").get("compression") == "auto_glz"  # type: ignore[union-attr]
    assert graphics.find("streaming").get("mode") == "filter"  # type: ignore[union-attr]
    assert root.find("devices/video/model").get("type") == "qxl"  # type: ignore[union-attr]
    channels = {c.find("target").get("name") for c in root.findall("devices/channel")}  # type: ignore[union-attr]
    assert channels == {"org.qemu.guest_agent.0", "com.redhat.spice.0"}
    # The device policy is off unless allowed: no USB redirection, no clipboard, no file transfer.
    assert root.findall("devices/redirdev") == []
    assert root.find("devices/graphics/clipboard").get("copypaste") == "no"  # type: ignore[union-attr]
    assert root.find("devices/graphics/filetransfer").get("enable") == "no"  # type: ignore[union-attr]
    disk = root.find("devices/disk[@device='disk']")
    assert disk is not None
    assert disk.find("target").get("bus") == "virtio"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    nic = root.find("devices/interface")
    assert nic is not None and nic.find("mac").get("address") == mac  # type: ignore[union-attr]
    assert nic.find("source").get("bridge") == "br0"  # type: ignore[union-attr]
    facts = read_domain_facts(ET.tostring(root, encoding="unicode"))
    assert facts.boot_order == ("cdrom", "hd", "network")
    assert facts.iso_path == "/iso/inst.iso"


def test_no_network_means_no_nic_at_all() -> None:
    root = ET.fromstring(build_domain_xml(definition(network=None)))  # noqa: S314
    assert root.find("devices/interface") is None


def test_names_and_paths_with_markup_characters_cannot_inject_xml() -> None:
    xml = build_domain_xml(definition(disk_source="/srv/images/a'b\"<c>&.qcow2"))
    root = ET.fromstring(xml)  # noqa: S314
    source = root.find("devices/disk/source")
    assert source is not None and source.get("file") == "/srv/images/a'b\"<c>&.qcow2"
    assert len(root.findall("devices/disk")) == 3, "the disk and two CD-ROM drives"


def test_libvirt_accepts_the_definition_and_keeps_the_password_secret() -> None:
    conn = libvirt.open("test:///default")
    try:
        xml = build_domain_xml(definition(domain_type="qemu", network="br0", mac_address=random_mac()))
        dom = conn.defineXML(xml.replace('type="qemu"', 'type="test"', 1))
        assert "passwd=" not in dom.XMLDesc(0), "the password only shows with the secure flag"
        assert "passwd=" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
        dom.undefine()
    finally:
        conn.close()
