"""remote-viewer connection files (``.vv``), built from the broker's connection fields.

The launcher builds its own file rather than passing the dashboard's ``vv``
through, so the thin client's viewer options (full screen, USB redirection,
hotkeys) apply. The result goes to remote-viewer on stdin and never touches
the disk.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvm_vdi_client.config import VV_HOTKEY_ACTIONS
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.model import SpiceConnection


class VvError(ValueError):
    pass


def _value(key: str, value: str) -> str:
    # A newline would start a new key: a hostile title could then inject "proxy=" or "host=".
    if "\n" in value or "\r" in value or "\0" in value:
        raise VvError(_("{field} contains a line break").format(field=f"connection.{key}"))
    return value


def build_vv(
    connection: SpiceConnection,
    *,
    fullscreen: bool,
    usb_redirect: bool,
    hotkeys: Mapping[str, str],
    title: str | None = None,
) -> str:
    lines = ["[virt-viewer]", "type=spice", f"host={_value('host', connection.host)}"]
    if connection.port is not None:
        lines.append(f"port={connection.port}")
    if connection.tls_port is not None:
        lines.append(f"tls-port={connection.tls_port}")
        if connection.host_subject:
            lines.append(f"host-subject={_value('host_subject', connection.host_subject)}")
        if connection.ca:
            # virt-viewer reads the CA certificate as one line with literal "\n" escapes.
            pem = connection.ca.strip().replace("\r\n", "\n").replace("\n", "\\n")
            lines.append(f"ca={_value('ca', pem)}")
    lines.append(f"password={_value('password', connection.password)}")
    if connection.proxy:
        # The dashboard's CONNECT gateway: thin clients need no route to the hypervisors.
        lines.append(f"proxy={_value('proxy', connection.proxy)}")
    lines += [
        f"title={_value('title', title or connection.title)}",
        f"fullscreen={int(fullscreen)}",
        f"enable-usbredir={int(usb_redirect)}",
        f"enable-usb-autoshare={int(usb_redirect)}",
        "delete-this-file=1",
    ]
    for action, keys in sorted(hotkeys.items()):
        if action not in VV_HOTKEY_ACTIONS:
            raise VvError(_("{key}: unknown action").format(key=f"viewer.hotkeys.{action}"))
        lines.append(f"{action}={_value(action, keys)}")
    return "\n".join(lines) + "\n"
