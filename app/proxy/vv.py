"""``.vv`` files: what remote-viewer (virt-viewer) needs to open one console.

The file carries the SPICE password and the console ticket (inside ``proxy=``),
so it is served ``Cache-Control: no-store`` and asks the viewer to delete it
once read (``delete-this-file=1``). Both secrets expire within minutes anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.proxy.service import ConsoleGrant

MEDIA_TYPE = "application/x-virt-viewer"


@dataclass(frozen=True)
class Hotkeys:
    """virt-viewer hotkey names, e.g. ``shift+f12``; empty means the viewer's default."""

    release_cursor: str = "shift+f12"
    toggle_fullscreen: str = "shift+f11"
    secure_attention: str = "ctrl+alt+end"


DEFAULT_HOTKEYS = Hotkeys()


class VVValueError(ValueError):
    pass


def _value(name: str, value: object) -> str:
    text = str(value)
    # One key per line: a value with a line break could smuggle in other keys.
    if "\n" in text or "\r" in text or "\0" in text:
        raise VVValueError(f".vv field {name!r} must be a single line")
    return text


def _pem_value(pem: str) -> str:
    # virt-viewer reads the CA certificate as one line with literal "\n" escapes.
    return pem.strip().replace("\r\n", "\n").replace("\n", "\\n")


def build_vv(
    grant: ConsoleGrant,
    *,
    title: str,
    fullscreen: bool = False,
    usb_redirect: bool = True,
    usb_autoshare: bool | None = None,
    hotkeys: Hotkeys | None = DEFAULT_HOTKEYS,
    through_gateway: bool = True,
) -> str:
    """The ``[virt-viewer]`` file for ``grant``; through the CONNECT gateway unless told otherwise."""
    fields: list[tuple[str, object]] = [("type", "spice"), ("host", grant.host)]
    if grant.port is not None:
        fields.append(("port", grant.port))
    if grant.tls_port is not None:
        fields.append(("tls-port", grant.tls_port))
        if grant.host_subject:
            fields.append(("host-subject", grant.host_subject))
    fields.append(("password", grant.password))
    if through_gateway:
        fields.append(("proxy", grant.proxy_url))
    fields += [
        ("title", title),
        ("delete-this-file", 1),
        ("fullscreen", int(fullscreen)),
        ("enable-usbredir", int(usb_redirect)),
        ("enable-usb-autoshare", int(usb_redirect if usb_autoshare is None else usb_autoshare)),
    ]
    if hotkeys is not None:
        fields += [
            (key, value)
            for key, value in (
                ("release-cursor", hotkeys.release_cursor),
                ("toggle-fullscreen", hotkeys.toggle_fullscreen),
                ("secure-attention", hotkeys.secure_attention),
            )
            if value
        ]
    lines = ["[virt-viewer]"]
    lines += [f"{key}={_value(key, value)}" for key, value in fields]
    if grant.tls_port is not None and grant.ca:
        lines.append(f"ca={_pem_value(grant.ca)}")
    return "\n".join(lines) + "\n"


def connection_json(grant: ConsoleGrant, *, title: str, vv: str, console_url: str) -> dict[str, Any]:
    """The API's ``connection`` object for ``grant``: what a client needs to open the console itself,
    the ``.vv`` file ``vv`` for remote-viewer, and the in-browser console page at ``console_url``."""
    return {
        "protocol": "spice",
        "host": grant.host,
        "port": grant.port,
        "tls_port": grant.tls_port,
        **({"host_subject": grant.host_subject, "ca": grant.ca} if grant.tls_port is not None else {}),
        "password": grant.password,
        "ticket": grant.ticket,
        "proxy": grant.proxy_url,
        "title": title,
        "vv": vv,
        "console_url": console_url,
    }
