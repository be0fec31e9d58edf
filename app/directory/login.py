"""Directory login: one fresh bind per login attempt, nothing cached.

* Active Directory (``kind = "ad"``): bind as the user principal name typed
  (``alice@corp.example.com``, any UPN suffix of the forest) or as
  ``name@ad_domain`` for a bare ``sAMAccountName``; then ask the directory who
  bound ("Who am I?", RFC 4532) and read *that* account's own entry. The typed
  name is never trusted to name the account: a user whose UPN spells another
  account's ``sAMAccountName`` binds as themselves and stays themselves. Groups:
  ``memberOf``, the groups those are nested in (AD's in-chain matching rule),
  and the primary group, which AD leaves out of ``memberOf``: the group whose
  SID is the user's domain SID + ``primaryGroupID``.
* Plain LDAP (``kind = "ldap"``): bind as the DN from ``user_dn_template`` or
  found by a service-account search; groups from ``memberOf``, from groups whose
  ``member`` names the user, or from a configured attribute.

User input only reaches the directory escaped (``escape_filter_chars`` in
filters, ``escape_rdn`` in DNs), and an empty password is refused before any
bind: LDAP servers treat a simple bind with a name and no password as an
*unauthenticated* bind that "succeeds" (RFC 4513 §5.1.2).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3 import Connection
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_bytes, escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from app.directory.server import DirectoryConfigError, make_server, open_connection
from app.i18n import gettext as _
from app.settings import DirectorySettings

log = logging.getLogger("kvmvdi.directory")

MAX_USERNAME_LENGTH = 256
AD_ATTRIBUTES = ["sAMAccountName", "displayName", "mail", "memberOf", "primaryGroupID", "objectSid"]
# userAccountControl's ACCOUNTDISABLE flag.
AD_ACCOUNT_DISABLED = 0x2
# Bind results that mean "these credentials do not log in" rather than "the directory is broken".
_REFUSED_BIND_RESULTS = frozenset({34, 48, 49, 50, 53})


class DirectoryError(Exception):
    """The directory answered, but not as configured (service bind refused, ambiguous account ...)."""


class DirectoryUnavailable(DirectoryError):
    """The directory could not be reached or the TLS handshake failed."""


class InvalidUsername(ValueError):
    pass


@dataclass(frozen=True)
class DirectoryIdentity:
    username: str
    dn: str
    display_name: str
    email: str
    # Group names (the first RDN value, e.g. "vdi-users") and full DNs, as the directory spells them.
    groups: tuple[str, ...]
    group_dns: tuple[str, ...]

    def group_keys(self) -> frozenset[str]:
        """Lower-cased names and DNs, for matching against registered directory groups."""
        return frozenset(g.lower() for g in (*self.groups, *self.group_dns))


def check_username(username: str) -> str:
    """Refuse names no directory account can have; everything else is escaped, never rejected."""
    if not username or not username.strip():
        raise InvalidUsername("the user name is empty")
    if len(username) > MAX_USERNAME_LENGTH:
        raise InvalidUsername("the user name is too long")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in username):
        raise InvalidUsername("the user name contains control characters")
    return username.strip()


def group_name(value: str) -> str:
    """``cn=vdi-users,ou=groups,...`` → ``vdi-users``; a value that is not a DN stays as it is."""
    try:
        parts = parse_dn(value, escape=False, strip=True)
    except LDAPException:
        return value
    if not parts or "=" not in value:
        return value
    return str(parts[0][1])


def _text(raw: dict[str, list[bytes]], name: str) -> list[str]:
    for key, values in raw.items():
        if key.lower() == name.lower():
            return [v.decode("utf-8", "replace") for v in values]
    return []


def _first(raw: dict[str, list[bytes]], name: str) -> str:
    values = _text(raw, name)
    return values[0] if values else ""


def _raw_all(raw: dict[str, list[bytes]], name: str) -> list[bytes]:
    for key, values in raw.items():
        if key.lower() == name.lower():
            return list(values)
    return []


def _raw_first(raw: dict[str, list[bytes]], name: str) -> bytes | None:
    values = _raw_all(raw, name)
    return values[0] if values else None


def primary_group_sid(user_sid: bytes, rid: int) -> bytes:
    """The SID of the group with relative id ``rid`` in the user's domain.

    A binary SID ends with its sub-authorities as little-endian 32-bit words;
    the last one is the user's RID, the ones before it name the domain.
    """
    if len(user_sid) < 12 or (len(user_sid) - 8) % 4:
        raise DirectoryError(_("the account's objectSid is malformed"))
    return user_sid[:-4] + struct.pack("<I", rid)


class DirectoryLogin:
    def __init__(self, config: DirectorySettings) -> None:
        self.config = config

    @property
    def enabled(self) -> bool:
        return self.config.kind != "none"

    async def authenticate(self, username: str, password: str) -> DirectoryIdentity | None:
        """The identity for these credentials, or ``None`` when the directory refuses them.

        Raises :class:`DirectoryUnavailable` / :class:`DirectoryError` when the
        directory cannot answer, so callers can tell users "try later" instead of
        "wrong password".
        """
        if not self.enabled:
            return None
        # Before anything else: a name with an empty password would be an unauthenticated bind.
        if not password:
            return None
        try:
            username = check_username(username)
        except InvalidUsername:
            return None
        return await asyncio.to_thread(self._authenticate, username, password)

    @property
    def can_recheck(self) -> bool:
        """Whether signed-in users' groups can be read again: a service account is configured."""
        return self.enabled and bool(self.config.bind_dn) and self.config.groups_recheck > 0

    async def lookup(self, username: str) -> DirectoryIdentity | None:
        """The identity of an account as the service account reads it now, without its password.

        ``None`` when the directory no longer has the account, or (AD) it is disabled. Raises
        like :meth:`authenticate` when the directory cannot answer.
        """
        return await asyncio.to_thread(self._guarded, self._lookup, username)

    # The rest runs in a worker thread: ldap3's synchronous strategy blocks.

    def _authenticate(self, username: str, password: str) -> DirectoryIdentity | None:
        if self.config.kind == "ad":
            return self._guarded(lambda: self._authenticate_ad(make_server(self.config), username, password))
        return self._guarded(lambda: self._authenticate_ldap(make_server(self.config), username, password))

    def _guarded(self, work: Callable[..., DirectoryIdentity | None], *args: Any) -> DirectoryIdentity | None:
        """``work(*args)``, with configuration and network failures turned into DirectoryError(s)."""
        try:
            return work(*args)
        except DirectoryConfigError as exc:
            raise DirectoryError(str(exc)) from exc
        except LDAPException as exc:
            log.warning("directory unreachable: %s", type(exc).__name__)
            raise DirectoryUnavailable(f"the directory could not be reached ({type(exc).__name__})") from exc

    def _bind(self, server: ldap3.Server, user: str, password: str) -> Connection | None:
        conn = open_connection(server, self.config, user, password)
        if conn.bind():
            return conn
        result = conn.result.get("result")
        conn.unbind()
        if result in _REFUSED_BIND_RESULTS:
            return None
        raise DirectoryError(
            _("the directory refused the bind: {get}").format(get=conn.result.get("description"))
        )

    def _search(
        self,
        conn: Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        scope: Any = ldap3.SUBTREE,
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        conn.search(base, search_filter, search_scope=scope, attributes=attributes, size_limit=1000)
        return [
            (entry["dn"], entry.get("raw_attributes", {}))
            for entry in conn.response or []
            if entry.get("type") == "searchResEntry"
        ]

    # Active Directory

    def _authenticate_ad(
        self, server: ldap3.Server, username: str, password: str
    ) -> DirectoryIdentity | None:
        domain = self.config.ad_domain
        if not domain:
            raise DirectoryError(_("directory.ad_domain is not configured"))
        if "@" in username:
            account, _at, suffix = username.rpartition("@")
            if not account or not suffix:
                return None
            bind_name = username
        else:
            bind_name = f"{username}@{domain}"
        conn = self._bind(server, bind_name, password)
        if conn is None:
            return None
        try:
            return self._ad_identity(conn, *self._bound_entry(conn))
        finally:
            conn.unbind()

    def _ad_identity(self, conn: Connection, dn: str, raw: dict[str, list[bytes]]) -> DirectoryIdentity:
        group_dns = _text(raw, "memberOf")
        known = {g.lower() for g in group_dns}
        for extra in [*self._nested_group_dns(conn, dn), self._primary_group_dn(conn, raw)]:
            if extra and extra.lower() not in known:
                known.add(extra.lower())
                group_dns.append(extra)
        return DirectoryIdentity(
            username=_first(raw, "sAMAccountName"),
            dn=dn,
            display_name=_first(raw, "displayName"),
            email=_first(raw, "mail"),
            groups=tuple(group_name(g) for g in group_dns),
            group_dns=tuple(group_dns),
        )

    def _bound_entry(self, conn: Connection) -> tuple[str, dict[str, list[bytes]]]:
        """The entry of the account this connection is bound as, asked of the directory itself."""
        attributes = AD_ATTRIBUTES
        authzid = conn.extend.standard.who_am_i()
        if isinstance(authzid, bytes):
            authzid = authzid.decode("utf-8", "replace")
        authzid = str(authzid or "")
        if authzid.lower().startswith("dn:"):
            found = self._search(conn, authzid[3:], "(objectClass=user)", attributes, scope=ldap3.BASE)
        elif authzid.lower().startswith("u:") and authzid[2:]:
            # u:CORP\alice (AD, Samba): the NetBIOS domain, then the sAMAccountName.
            account = authzid[2:].rpartition("\\")[2]
            found = self._search(
                conn,
                self.config.base_dn,
                f"(&(objectClass=user)(sAMAccountName={escape_filter_chars(account)}))",
                attributes,
            )
        else:
            # No "Who am I?" (Samba): the bound session's own security token, read from the rootDSE,
            # holds the account's SID; only that account's entry has it among user objects.
            token = self._search(conn, "", "(objectClass=*)", ["tokenGroups"], scope=ldap3.BASE)
            sids = [sid for _dn, raw in token for sid in _raw_all(raw, "tokenGroups")]
            if not sids:
                raise DirectoryError(_("the directory does not say which account bound"))
            any_sid = "".join(f"(objectSid={escape_bytes(sid)})" for sid in sids)
            found = self._search(conn, self.config.base_dn, f"(&(objectClass=user)(|{any_sid}))", attributes)
        if len(found) != 1 or not _first(found[0][1], "sAMAccountName"):
            raise DirectoryError(
                _("the bound account {authzid!r} has {count} readable entries").format(
                    authzid=authzid, count=len(found)
                )
            )
        return found[0]

    def _nested_group_dns(self, conn: Connection, user_dn: str) -> list[str]:
        """Every group the user is in through other groups (LDAP_MATCHING_RULE_IN_CHAIN)."""
        chain = f"(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={escape_filter_chars(user_dn)}))"
        return [dn for dn, _ in self._search(conn, self.config.base_dn, chain, ["1.1"])]

    def _primary_group_dn(self, conn: Connection, raw: dict[str, list[bytes]]) -> str | None:
        rid_text = _first(raw, "primaryGroupID")
        sid = _raw_first(raw, "objectSid")
        if not rid_text or sid is None:
            return None
        group_sid = primary_group_sid(sid, int(rid_text))
        found = self._search(conn, self.config.base_dn, f"(objectSid={escape_bytes(group_sid)})", ["cn"])
        return found[0][0] if len(found) == 1 else None

    # Plain LDAP

    def _authenticate_ldap(
        self, server: ldap3.Server, username: str, password: str
    ) -> DirectoryIdentity | None:
        config = self.config
        service: Connection | None = None
        try:
            if config.bind_dn:
                service = self._bind(
                    server,
                    config.bind_dn,
                    config.bind_password.get_secret_value() if config.bind_password else "",
                )
                if service is None:
                    raise DirectoryError(_("the directory refused the service account (directory.bind_dn)"))
            if config.user_dn_template:
                user_dn = config.user_dn_template.format(username=escape_rdn(username))
            elif service is not None:
                user_filter = config.user_filter.format(username=escape_filter_chars(username))
                matches = self._search(service, config.base_dn, user_filter, ["1.1"])
                if len(matches) != 1:
                    return None
                user_dn = matches[0][0]
            else:
                raise DirectoryError(_("configure directory.user_dn_template or directory.bind_dn"))

            user_conn = self._bind(server, user_dn, password)
            if user_conn is None:
                return None
            try:
                reader = service or user_conn
                return self._ldap_identity(reader, user_dn, username)
            finally:
                user_conn.unbind()
        finally:
            if service is not None:
                service.unbind()

    def _ldap_identity(self, conn: Connection, user_dn: str, typed: str) -> DirectoryIdentity:
        config = self.config
        attribute = config.group_attribute if config.group_source == "attribute" else "memberOf"
        entries = self._search(
            conn,
            user_dn,
            "(objectClass=*)",
            [config.username_attribute, "displayName", "cn", "mail", attribute],
            scope=ldap3.BASE,
        )
        if not entries:
            raise DirectoryError(_("the account bound but its entry cannot be read"))
        dn, raw = entries[0]
        name = _first(raw, config.username_attribute)
        if config.group_source == "member":
            base = config.group_base_dn or config.base_dn
            member_filter = "(|(member={dn})(uniqueMember={dn})(memberUid={uid}))".format(
                dn=escape_filter_chars(dn), uid=escape_filter_chars(name or typed)
            )
            group_dns = [found_dn for found_dn, _ in self._search(conn, base, member_filter, ["1.1"])]
        else:
            group_dns = _text(raw, attribute)
        return DirectoryIdentity(
            username=name if name and name.lower() == typed.lower() else typed,
            dn=dn,
            display_name=_first(raw, "displayName") or _first(raw, "cn"),
            email=_first(raw, "mail"),
            groups=tuple(group_name(g) for g in group_dns),
            group_dns=tuple(g for g in group_dns if "=" in g),
        )

    # Reading an account again (service account, no user password)

    def _lookup(self, username: str) -> DirectoryIdentity | None:
        config = self.config
        server = make_server(config)
        service = self._bind(
            server, config.bind_dn, config.bind_password.get_secret_value() if config.bind_password else ""
        )
        if service is None:
            raise DirectoryError(_("the directory refused the service account (directory.bind_dn)"))
        try:
            if config.kind == "ad":
                found = self._search(
                    service,
                    config.base_dn,
                    f"(&(objectClass=user)(sAMAccountName={escape_filter_chars(username)}))",
                    [*AD_ATTRIBUTES, "userAccountControl"],
                )
                if len(found) != 1:
                    return None
                dn, raw = found[0]
                if int(_first(raw, "userAccountControl") or "0") & AD_ACCOUNT_DISABLED:
                    return None
                return self._ad_identity(service, dn, raw)
            if config.user_dn_template:
                user_dn = config.user_dn_template.format(username=escape_rdn(username))
                if not self._search(service, user_dn, "(objectClass=*)", ["1.1"], scope=ldap3.BASE):
                    return None
            else:
                matches = self._search(
                    service,
                    config.base_dn,
                    config.user_filter.format(username=escape_filter_chars(username)),
                    ["1.1"],
                )
                if len(matches) != 1:
                    return None
                user_dn = matches[0][0]
            return self._ldap_identity(service, user_dn, username)
        finally:
            service.unbind()
