"""ISC dhcpd ``host`` stanzas from the VMs' MAC addresses (VMs with a network only)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from app.clock import utcnow
from app.vms.records import Vm

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def dhcp_hosts(vms: Iterable[Vm]) -> list[Vm]:
    """The VMs that get a stanza: a network and a well-formed MAC address."""
    return [
        vm
        for vm in sorted(vms, key=lambda vm: vm.name)
        if vm.network and vm.mac_address and MAC_RE.fullmatch(vm.mac_address.lower())
    ]


def dhcpd_config(vms: Iterable[Vm]) -> str:
    """The stanzas as one file, ready for ``include`` in dhcpd.conf."""
    lines = [f"# KVM-VDI: DHCP host entries, generated {utcnow().isoformat()} UTC", ""]
    for vm in dhcp_hosts(vms):
        # VM names are [A-Za-z0-9_-]: safe as dhcpd identifiers and as quoted host names.
        lines += [
            f"host {vm.name} {{",
            f"  hardware ethernet {vm.mac_address.lower()};",  # type: ignore[union-attr]
            f'  option host-name "{vm.name}";',
            "}",
            "",
        ]
    return "\n".join(lines)
