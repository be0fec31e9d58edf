"""What the launcher tells xfreerdp about the RDP server's certificate, and what its exit status means.

xfreerdp asks on its standard input whether to trust a certificate it cannot
verify; the launcher's stdin pipe carries the password and then ends, so such a
question would be answered by whatever is left and the connection would fail
with no word on screen. The launcher therefore always passes ``/cert:deny`` (no
question: an unverifiable certificate ends the connection) plus the SHA-256
fingerprints the configuration pins (``viewer.rdp_certificates``), which
xfreerdp accepts as they are: the usual case of an RDP host with a self-signed
certificate. A certificate signed by a CA the thin client trusts needs no pin.
"""

from __future__ import annotations

import re

from kvm_vdi_client.i18n import N_
from kvm_vdi_client.i18n import gettext as _

_HEX_PAIRS = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){31}")


def normalise_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as xfreerdp compares it: 32 lower-case hex pairs joined by colons.

    Accepts ``AB:CD:…``, ``abcd…`` and an optional ``sha256:`` prefix; raises ValueError otherwise.
    """
    value = text.strip().lower().removeprefix("sha256:")
    if ":" not in value and re.fullmatch(r"[0-9a-f]{64}", value):
        value = ":".join(value[i : i + 2] for i in range(0, 64, 2))
    if not _HEX_PAIRS.fullmatch(value):
        raise ValueError(
            _("expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {value}").format(
                value=repr(text)
            )
        )
    return value


def certificate_argument(fingerprints: tuple[str, ...]) -> str:
    """``/cert:deny[,fingerprint:sha256:…]``: never a question on stdin, pinned certificates accepted."""
    return ",".join(["/cert:deny", *(f"fingerprint:sha256:{f}" for f in fingerprints)])


# xfreerdp's exit statuses (client/X11/xf_client.h, FreeRDP 2) for a connection that never
# got going; below 128 the session ran and ended (closed, logged off, disconnected by the server).
_EXIT_REASONS = {
    131: N_("it could not connect to {host}"),
    139: N_("the name {host} could not be resolved"),
    140: N_("the name {host} could not be resolved"),
    141: N_("it could not connect to {host}"),
    147: N_("it could not connect to {host}"),
    143: N_(
        "the certificate of {host} is not trusted (pin its SHA-256 fingerprint in viewer.rdp_certificates)"
    ),
    132: N_("{host} refused the user name or password"),
    134: N_("{host} refused the user name or password"),
    154: N_("{host} refused the user name or password"),
    155: N_("{host} refused access to this account"),
    135: N_("the account is locked out at {host}"),
    151: N_("the account is disabled at {host}"),
    157: N_("the account has expired at {host}"),
    148: N_("the password has expired at {host}"),
    149: N_("the password must be changed at {host}"),
    152: N_("the password has expired at {host}"),
}


def exit_reason(returncode: int) -> str | None:
    """The untranslated reason (with ``{host}``) for an xfreerdp exit status, or None for a session
    that ran and ended. Unknown failure statuses (128 and above) get a generic reason."""
    if returncode < 128:
        return None
    return _EXIT_REASONS.get(returncode, N_("it stopped with status {status}"))
