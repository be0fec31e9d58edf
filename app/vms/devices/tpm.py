"""TPM 2.0: an swtpm the dashboard starts for the VM, reached over a UNIX socket.

The dashboard runs swtpm itself (see :mod:`app.vms.firmware_state`) so that each
VM's TPM state is a directory it can copy: an initial's state to its VDI
children, a volatile desktop's saved state to a throw-away copy per boot.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from app.vms.devices._xml import sub


@dataclass(frozen=True)
class TpmSpec:
    socket_path: str


def tpm(spec: TpmSpec) -> ET.Element:
    element = ET.Element("tpm", {"model": "tpm-crb"})
    backend = sub(element, "backend", type="external")
    sub(backend, "source", type="unix", mode="connect", path=spec.socket_path)
    return element
