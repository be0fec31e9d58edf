"""A running domain's SPICE display: where it listens, and its one-time password.

The XML parsed here is produced by libvirt itself, not by users.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import NamedTuple

import libvirt

from app.hyper.connection import translate
from app.hyper.domains import lookup
from app.hyper.errors import HypervisorError, InvalidDomainState

# Addresses that mean "all interfaces": clients must use the hypervisor's address instead.
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 -- compared, never bound


class SpiceEndpoint(NamedTuple):
    host: str
    port: int


def _spice_element(xml: str) -> ET.Element | None:
    root = ET.fromstring(xml)  # noqa: S314 -- libvirt's own XML
    return root.find("./devices/graphics[@type='spice']")


def _listen_address(graphics: ET.Element) -> str:
    listen = graphics.get("listen")
    if listen:
        return listen
    child = graphics.find("./listen[@type='address']")
    return child.get("address", "") if child is not None else ""


def spice_endpoint(
    conn: libvirt.virConnect, name: str, spice_address: str, fallback_host: str
) -> SpiceEndpoint:
    """The host and port a SPICE client (or the dashboard's proxy) connects to.

    ``spice_address`` (the hypervisor's configured SPICE address) wins; otherwise
    the display's listen address, or ``fallback_host`` when it listens on all
    interfaces.
    """
    domain = lookup(conn, name)
    if not domain.isActive():
        raise InvalidDomainState(f"domain {name!r} is not running: no SPICE display to connect to")
    graphics = _spice_element(domain.XMLDesc(0))
    if graphics is None:
        raise HypervisorError(f"domain {name!r} has no SPICE display")
    port = int(graphics.get("port", "-1"))
    if port <= 0:
        raise HypervisorError(f"domain {name!r} has a SPICE display without a plain-text port")
    listen = _listen_address(graphics)
    host = spice_address or (fallback_host if listen in _WILDCARDS else listen)
    return SpiceEndpoint(host, port)


def password_validity(valid_until: datetime) -> str:
    """libvirt's ``passwdValidTo``: UTC, seconds resolution."""
    if valid_until.tzinfo is not None:
        valid_until = valid_until.astimezone(UTC).replace(tzinfo=None)
    return valid_until.strftime("%Y-%m-%dT%H:%M:%S")


def set_spice_password(conn: libvirt.virConnect, name: str, password: str, valid_until: datetime) -> None:
    """Give the running display a new password, valid until ``valid_until`` (UTC).

    Only the live domain changes (the password never reaches the persistent
    definition on disk); clients already connected stay connected.
    """
    domain = lookup(conn, name)
    if not domain.isActive():
        raise InvalidDomainState(f"domain {name!r} is not running")
    graphics = _spice_element(domain.XMLDesc(0))
    if graphics is None:
        raise HypervisorError(f"domain {name!r} has no SPICE display")
    # Keep every other attribute and child (ports, listen, channels) as they are.
    graphics.set("passwd", password)
    graphics.set("passwdValidTo", password_validity(valid_until))
    graphics.set("connected", "keep")
    device = ET.tostring(graphics, encoding="unicode")
    try:
        domain.updateDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        # Keep the error's kind but not its context: the device XML holds the password.
        error = translate(exc)
        raise type(error)(f"could not set the SPICE password of {name!r}: {error}") from None
