"""The network card: on a host bridge or a libvirt network, virtio or e1000e.

A VM without a network has no card at all: an unconnected card only makes the
PXE ROM spin a CPU at boot.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from app.vms.devices._xml import boot, sub

NicModel = Literal["virtio", "e1000e"]
NetworkType = Literal["bridge", "network"]
NIC_MODELS: tuple[NicModel, ...] = ("virtio", "e1000e")
NETWORK_TYPES: tuple[NetworkType, ...] = ("bridge", "network")


@dataclass(frozen=True)
class NicSpec:
    source: str
    mac_address: str
    kind: NetworkType = "bridge"
    model: NicModel = "virtio"
    boot_index: int | None = None


def interface(spec: NicSpec) -> ET.Element:
    element = ET.Element("interface", {"type": spec.kind})
    sub(element, "mac", address=spec.mac_address)
    sub(element, "source", **{spec.kind: spec.source})
    sub(element, "model", type=spec.model)
    boot(element, spec.boot_index)
    return element
