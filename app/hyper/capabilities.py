"""What the hypervisor host can run: hardware virtualisation (KVM) or only emulation (TCG).

libvirt's capabilities XML lists, per guest architecture, the domain types the
host offers; ``kvm`` is there only when /dev/kvm works for libvirt. The XML
parsed here is libvirt's own output.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt


def offers_kvm(capabilities_xml: str, arch: str = "x86_64") -> bool:
    root = ET.fromstring(capabilities_xml)  # noqa: S314 -- libvirt's own XML
    for guest in root.findall("guest"):
        machine = guest.find("arch")
        if machine is None or machine.get("name") != arch:
            continue
        if machine.find("domain[@type='kvm']") is not None:
            return True
    return False


def supports_kvm(conn: libvirt.virConnect, arch: str = "x86_64") -> bool:
    """True when ``<domain type='kvm'>`` guests of ``arch`` can run on this host."""
    return offers_kvm(conn.getCapabilities(), arch)
