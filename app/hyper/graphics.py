"""A running domain's SPICE display: where the proxy reaches it, and its password.

The XML parsed here is produced by libvirt itself, not by users.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import NamedTuple

import libvirt

from app.hyper.connection import translate
from app.hyper.domains import lookup
from app.hyper.errors import InvalidDomainState, NoSpiceDisplay
from app.i18n import gettext as _


class SpiceEndpoint(NamedTuple):
    """Where the dashboard's proxy reaches a display: the hypervisor's console address and the
    display's TLS port and/or plain port (``None`` when it has none or plain SPICE is not allowed)."""

    host: str
    port: int | None
    tls_port: int | None = None


def _spice_element(xml: str) -> ET.Element | None:
    root = ET.fromstring(xml)  # noqa: S314 -- libvirt's own XML
    return root.find("./devices/graphics[@type='spice']")


def _port(graphics: ET.Element, attribute: str) -> int | None:
    try:
        value = int(graphics.get(attribute, "-1"))
    except ValueError:
        return None
    return value if 0 < value < 65536 else None


def spice_endpoint(conn: libvirt.virConnect, name: str, host: str, allow_plain: bool) -> SpiceEndpoint:
    """The SPICE display of running domain ``name`` as reached at ``host``.

    ``host`` is the hypervisor's console address from its record: never the
    display's ``listen`` address, which a domain defined or adopted from elsewhere
    could point anywhere (127.0.0.1 would be the dashboard's own loopback). The
    plain port counts only when ``allow_plain``.
    """
    domain = lookup(conn, name)
    if not domain.isActive():
        raise InvalidDomainState(f"domain {name!r} is not running: no SPICE display to connect to")
    graphics = _spice_element(domain.XMLDesc(0))
    if graphics is None:
        raise NoSpiceDisplay(_("domain {name!r} has no SPICE display").format(name=name))
    tls_port = _port(graphics, "tlsPort")
    port = _port(graphics, "port") if allow_plain else None
    if port is None and tls_port is None:
        if _port(graphics, "port") is not None:
            raise NoSpiceDisplay(
                _(
                    "the SPICE display of {name!r} has no TLS port, and plain SPICE is not allowed on this hypervisor: restart the desktop from the dashboard, or allow plain SPICE"  # noqa: E501
                ).format(name=name)
            )
        raise NoSpiceDisplay(_("domain {name!r} has a SPICE display without a port").format(name=name))
    return SpiceEndpoint(host, port, tls_port)


def password_validity(valid_until: datetime) -> str:
    """libvirt's ``passwdValidTo``: UTC, seconds resolution."""
    if valid_until.tzinfo is not None:
        valid_until = valid_until.astimezone(UTC).replace(tzinfo=None)
    return valid_until.strftime("%Y-%m-%dT%H:%M:%S")


def set_spice_password(
    conn: libvirt.virConnect, name: str, password: str, valid_until: datetime, disconnect: bool = False
) -> None:
    """Give the running display a new password, valid until ``valid_until`` (UTC).

    Only the live domain changes (the password never reaches the persistent
    definition on disk). Clients already connected stay connected, unless
    ``disconnect``: then SPICE cuts every client off (revocation).
    """
    domain = lookup(conn, name)
    if not domain.isActive():
        raise InvalidDomainState(f"domain {name!r} is not running")
    graphics = _spice_element(domain.XMLDesc(0))
    if graphics is None:
        raise NoSpiceDisplay(_("domain {name!r} has no SPICE display").format(name=name))
    # Keep every other attribute and child (ports, listen, channels) as they are.
    graphics.set("passwd", password)
    graphics.set("passwdValidTo", password_validity(valid_until))
    graphics.set("connected", "disconnect" if disconnect else "keep")
    device = ET.tostring(graphics, encoding="unicode")
    try:
        domain.updateDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        # Keep the error's kind but not its context: the device XML holds the password.
        error = translate(exc)
        raise type(error)(f"could not set the SPICE password of {name!r}: {error}") from None
