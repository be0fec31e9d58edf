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


def host_declaration_name(vm: Vm) -> str:
    """The name of the VM's ``host`` declaration: its own, unless dhcpd's parser refuses it.

    VM names are ``[A-Za-z0-9_-]``; dhcpd takes all of those as a declaration name but one
    starting with an underscore (nor may it be quoted). Those get ``vm.<id>``: the dot keeps it
    apart from every VM name, the id unique. The ``host-name`` option keeps the VM's name.
    """
    return f"vm.{vm.id}" if vm.name.startswith("_") else vm.name


def dhcpd_config(vms: Iterable[Vm]) -> str:
    """The stanzas as one file, ready for ``include`` in dhcpd.conf."""
    lines = [f"# KVM-VDI: DHCP host entries, generated {utcnow().isoformat()} UTC", ""]
    for vm in dhcp_hosts(vms):
        lines += [
            f"host {host_declaration_name(vm)} {{",
            f"  hardware ethernet {vm.mac_address.lower()};",  # type: ignore[union-attr]
            f'  option host-name "{vm.name}";',
            "}",
            "",
        ]
    return "\n".join(lines)
