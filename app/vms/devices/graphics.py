"""The SPICE display, locked, over TLS, with the device policy's clipboard and file-transfer switches.

SPICE is never open: the domain is defined with a random password that expired
long ago, so a console can only connect after the proxy set a fresh one. Every
channel is encrypted (``defaultMode='secure'``: libvirt then opens only a TLS
port); a hypervisor that allows plain SPICE for old clients gets both ports.
Clipboard and file transfer are refused by the SPICE server itself
(``<clipboard copypaste='no'/>``, ``<filetransfer enable='no'/>``): a client
that ignores the UI cannot turn them back on.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from app.vms.devices._xml import sub

# passwdValidTo in the past: the definition's random password is expired from the start.
EXPIRED = "2000-01-01T00:00:00"


@dataclass(frozen=True)
class SpiceSpec:
    listen: str
    password: str = field(repr=False)
    clipboard: bool = False
    file_transfer: bool = False
    # Also a plain port, for old clients (the hypervisor's "plain SPICE" setting).
    plain: bool = False


def spice(spec: SpiceSpec) -> ET.Element:
    element = ET.Element(
        "graphics",
        {
            "type": "spice",
            "autoport": "yes",
            "passwd": spec.password,
            "passwdValidTo": EXPIRED,
            "connected": "keep",
            "defaultMode": "any" if spec.plain else "secure",
        },
    )
    sub(element, "listen", type="address", address=spec.listen)
    sub(element, "image", compression="auto_glz")
    sub(element, "streaming", mode="filter")
    sub(element, "mouse", mode="client")
    sub(element, "clipboard", copypaste="yes" if spec.clipboard else "no")
    sub(element, "filetransfer", enable="yes" if spec.file_transfer else "no")
    return element
