"""QXL video with one to four heads (monitors in remote-viewer)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from app.vms.devices._xml import sub

MAX_HEADS = 4


def qxl(heads: int = 1) -> ET.Element:
    if not 1 <= heads <= MAX_HEADS:
        raise ValueError(f"video heads must be 1 to {MAX_HEADS}")
    element = ET.Element("video")
    # Each head needs its own primary surface: 16 MiB of VGA memory per head, rounded up to a
    # power of two (QEMU refuses other sizes).
    vgamem = 16384 << (heads - 1).bit_length()
    sub(
        element,
        "model",
        type="qxl",
        ram="65536",
        vram="65536",
        vgamem=str(vgamem),
        heads=str(heads),
        primary="yes",
    )
    return element
