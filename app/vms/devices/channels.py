"""virtio-serial channels: the QEMU guest agent and the SPICE agent."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from app.vms.devices._xml import sub

GUEST_AGENT = "org.qemu.guest_agent.0"
SPICE_AGENT = "com.redhat.spice.0"


def virtio_serial() -> ET.Element:
    return ET.Element("controller", {"type": "virtio-serial", "index": "0"})


def guest_agent() -> ET.Element:
    """qemu-guest-agent in the guest: IP addresses, OS name, shutdown when ACPI is ignored."""
    element = ET.Element("channel", {"type": "unix"})
    sub(element, "target", type="virtio", name=GUEST_AGENT)
    return element


def spice_agent() -> ET.Element:
    """spice-vdagent: display resizing and client mouse (the clipboard only where the policy allows)."""
    element = ET.Element("channel", {"type": "spicevmc"})
    sub(element, "target", type="virtio", name=SPICE_AGENT)
    return element
