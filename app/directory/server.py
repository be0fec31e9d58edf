"""Building ldap3 servers and connections from ``settings.directory`` (LDAPS / StartTLS, timeouts).

Passwords never cross the network in clear unless the directory's settings say so
(``allow_cleartext = true``): a plain ``ldap://`` URL without StartTLS is refused
before anything is sent. Certificates are verified (against ``ca_file`` when set,
else the system's CAs) and must name the host. Referrals are never followed: a
directory could otherwise send the dashboard, with the user's bind, to any server.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import ldap3
from ldap3 import Connection, Server, Tls

from app.i18n import gettext as _
from app.settings import DirectorySettings


class DirectoryConfigError(ValueError):
    pass


def make_server(config: DirectorySettings) -> Server:
    parts = urlsplit(config.url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise DirectoryConfigError(
            f"directory.url must be ldap://HOST[:PORT] or ldaps://HOST[:PORT], not {config.url!r}"
        )
    use_ssl = parts.scheme == "ldaps"
    if use_ssl and config.start_tls:
        raise DirectoryConfigError("directory.start_tls makes no sense with an ldaps:// URL: choose one")
    if not use_ssl and not config.start_tls and not config.allow_cleartext:
        raise DirectoryConfigError(
            f"directory.url {config.url} would send passwords in clear: use ldaps://, "
            "start_tls = true, or (only on a network you trust) allow_cleartext = true"
        )
    tls = None
    if use_ssl or config.start_tls:
        tls = Tls(
            validate=ssl.CERT_REQUIRED if config.verify_certificates else ssl.CERT_NONE,
            ca_certs_file=config.ca_file,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return Server(
        parts.hostname,
        port=parts.port or (636 if use_ssl else 389),
        use_ssl=use_ssl,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=config.timeout,
    )


def open_connection(
    server: Server, config: DirectorySettings, user: str | None, password: str | None
) -> Connection:
    """An opened (and, with StartTLS, encrypted) connection, not yet bound.

    ``raise_exceptions`` stays off so that a failed bind is a result to inspect,
    while network failures still raise ``LDAPException`` subclasses.
    """
    conn = Connection(
        server,
        user=user,
        password=password,
        authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
        auto_bind=ldap3.AUTO_BIND_NONE,
        receive_timeout=config.timeout,
        raise_exceptions=False,
        read_only=True,
        auto_referrals=False,
    )
    conn.open()
    if config.start_tls and not conn.start_tls():
        conn.unbind()
        raise ldap3.core.exceptions.LDAPStartTLSError(
            _("StartTLS refused: {result}").format(result=conn.result)
        )
    return conn
