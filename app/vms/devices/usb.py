"""USB: the xHCI controller, the tablet (absolute pointer), and SPICE USB redirection slots.

The number of redirection slots is the device policy's: zero means a client
cannot pass any USB device through, whatever its settings.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

MAX_REDIRECTIONS = 4


def controller() -> ET.Element:
    return ET.Element("controller", {"type": "usb", "index": "0", "model": "qemu-xhci", "ports": "15"})


def tablet() -> ET.Element:
    return ET.Element("input", {"type": "tablet", "bus": "usb"})


def redirections(count: int) -> list[ET.Element]:
    if not 0 <= count <= MAX_REDIRECTIONS:
        raise ValueError(f"USB redirection: 0 to {MAX_REDIRECTIONS} devices")
    return [ET.Element("redirdev", {"bus": "usb", "type": "spicevmc"}) for _ in range(count)]
