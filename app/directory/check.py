"""``kvm-vdi check`` for the directory: reachable, encrypted, and the service account accepted."""

from __future__ import annotations

from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPException

from app.directory.server import DirectoryConfigError, make_server, open_connection
from app.settings import DirectorySettings

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


def check_directory(config: DirectorySettings) -> tuple[str, str]:
    """(result, detail): connects as the dashboard does, binding with the service account if any.

    Blocking (ldap3): run it in a thread. Never shows the bind password.
    """
    if config.kind == "none":
        return SKIP, "not configured (directory.kind = none)"
    try:
        server = make_server(config)
    except DirectoryConfigError as exc:
        return FAIL, str(exc)
    transport = (
        "LDAPS" if urlsplit(config.url).scheme == "ldaps" else "StartTLS" if config.start_tls else "cleartext"
    )
    user = config.bind_dn or None
    password = config.bind_password.get_secret_value() if config.bind_password is not None else None
    try:
        conn = open_connection(server, config, user, password)
    except LDAPException as exc:
        return FAIL, f"{config.url}: cannot be reached over {transport}: {exc}"
    try:
        if user is not None and not conn.bind():
            reason = conn.result.get("description", "refused") if isinstance(conn.result, dict) else "refused"
            return FAIL, f"{config.url} ({transport}): the service account {user} cannot bind: {reason}"
    except LDAPException as exc:
        return FAIL, f"{config.url} ({transport}): binding failed: {exc}"
    finally:
        conn.unbind()
    who = f"bound as {user}" if user is not None else "no service account (users bind as themselves)"
    detail = f"{config.url} reachable over {transport}, {who}"
    if transport == "cleartext":
        # Only reached with allow_cleartext = true (make_server refuses it otherwise).
        return WARN, f"{detail}: passwords cross the network in clear, use ldaps:// or start_tls = true"
    return OK, detail
