"""The CPU: libvirt's default model, or the host's (``host-model`` / ``host-passthrough``, for
nested virtualisation) where the hypervisor really runs it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Literal

from app.vms.devices._xml import sub

CpuMode = Literal["default", "host-model", "host-passthrough"]
CPU_MODES: tuple[CpuMode, ...] = ("default", "host-model", "host-passthrough")


def cpu(mode: CpuMode, sockets: int, cores: int) -> ET.Element:
    attrs: dict[str, str] = {} if mode == "default" else {"mode": mode}
    if mode == "host-passthrough":
        attrs["check"] = "none"
    element = ET.Element("cpu", attrs)
    sub(element, "topology", sockets=str(sockets), dies="1", cores=str(cores), threads="1")
    return element
