"""What the QEMU guest agent inside a running guest tells: its OS and IP addresses.

Blocking functions of a libvirt connection, run on its worker threads. A guest
without the agent (or not booted far enough) answers ``None``: most desktops
start without one, so that is not an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from app.hyper.domains import lookup

# Errors that mean "no agent answers in there", not a broken connection.
NO_AGENT = frozenset(
    {
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
        libvirt.VIR_ERR_AGENT_UNSYNCED,
        libvirt.VIR_ERR_OPERATION_INVALID,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    }
)


@dataclass(frozen=True)
class GuestInfo:
    os_name: str
    # "10.0.0.5/24" style, loopback left out.
    addresses: tuple[str, ...]

    def summary(self) -> dict[str, object]:
        return {"os_name": self.os_name, "addresses": list(self.addresses)}


def _addresses(domain: libvirt.virDomain) -> tuple[str, ...]:
    found: list[str] = []
    interfaces = domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
    for interface in (interfaces or {}).values():
        for address in interface.get("addrs") or []:
            text = str(address.get("addr", ""))
            if not text or text == "::1" or text.startswith("127."):
                continue
            found.append(f"{text}/{address.get('prefix', '')}".rstrip("/"))
    return tuple(sorted(set(found)))


def guest_info(conn: libvirt.virConnect, name: str) -> GuestInfo | None:
    """The guest's OS name and addresses from its agent; ``None`` when no agent answers."""
    domain = lookup(conn, name)
    try:
        info = domain.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_OS, 0)
        addresses = _addresses(domain)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in NO_AGENT:
            return None
        raise
    os_name = str(info.get("os.pretty-name") or info.get("os.name") or "")
    return GuestInfo(os_name=os_name, addresses=addresses)
