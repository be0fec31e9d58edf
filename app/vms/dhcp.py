"""ISC dhcpd ``host`` stanzas from the VMs' MAC addresses (VMs with a network only), each with
the VM's fixed IPv4 address when it has one."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from app.clock import utcnow
from app.db.errors import INTEGRITY_ERRORS
from app.db.schema import vms
from app.i18n import gettext as _
from app.vms.context import VmContext
from app.vms.errors import Invalid, Refused
from app.vms.records import Vm, update_vms

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
        ]
        if vm.fixed_address:
            lines.append(f"  fixed-address {vm.fixed_address};")
        lines += [f'  option host-name "{vm.name}";', "}", ""]
    return "\n".join(lines)


def parse_fixed_address(text: str | None) -> str | None:
    """A fixed address as stored: a unicast IPv4 address in dotted form; empty or None clears it."""
    if text is None or not text.strip():
        return None
    try:
        address = ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise Invalid({"fixed_address": _("an IPv4 address, e.g. 192.0.2.10")}) from None
    if address.is_unspecified or address.is_multicast or address.is_loopback or address.is_reserved:
        wrong = _("an address a desktop can have (not 0.0.0.0, loopback or multicast)")
        raise Invalid({"fixed_address": wrong})
    return str(address)


async def set_fixed_address(
    ctx: VmContext, vm_id: int, text: str | None, *, actor: str = "", client_address: str = ""
) -> Vm:
    """Give the VM ``text`` as its fixed address (or none): each address belongs to one VM."""
    vm = await ctx.vm(vm_id)
    address = parse_fixed_address(text)
    if address is not None:
        taken = vms.select().with_only_columns(vms.c.name).where(vms.c.fixed_address == address)
        holder = await ctx.db.fetch_val(taken.where(vms.c.id != vm.id))
        if holder is not None:
            raise _in_use(address, str(holder))
    try:
        await update_vms(ctx.db, [vm.id], fixed_address=address)
    except INTEGRITY_ERRORS:
        # Given to another VM at the same moment.
        raise _in_use(address or "", _("another VM")) from None
    await ctx.audit.record(
        "vm_fixed_address", actor=actor, target=vm.name, client_address=client_address, address=address or ""
    )
    updated = await ctx.refresh(vm.id, "fixed_address")
    assert updated is not None
    return updated


def _in_use(address: str, holder: str) -> Refused:
    return Refused(
        _("{address} is already the fixed address of {vm}").format(address=address, vm=holder),
        code="address_in_use",
    )
