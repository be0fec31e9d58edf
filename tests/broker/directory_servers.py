"""Real directory servers for the tests: OpenLDAP (slapd) with memberOf, and an
Active Directory look-alike.

The AD look-alike is slapd with a small schema defining the AD attributes the
login reads (``sAMAccountName``, ``userPrincipalName``, ``primaryGroupID``,
``objectSid``) and a front that does what AD does with a ``user@domain`` simple
bind: it resolves the principal name to the account's DN before slapd sees the
bind (slapd itself only accepts DNs as bind names). Every other LDAP message
passes through byte for byte.

slapd runs in the foreground with ``-d stats``; its log records every BIND, so
tests can prove that a request never reached the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import ldap3
from ldap3.protocol.rfc4511 import LDAPMessage
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.ber import encoder as ber_encoder

from tests.services.ports import allocate_port
from tests.services.tls import issue_certificates
from tests.tiers import refuse_service
from tests.waiting import eventually_blocking

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "directory-admin-pw"
SERVICE_DN = f"cn=vdi-service,{SUFFIX}"
SERVICE_PASSWORD = "service-account-pw"
AD_DOMAIN = "example.org"
DOMAIN_SID = (21, 1111111111, 2222222222, 3333333333)

# Users: name -> (password, display name, mail, groups by cn, AD primary group RID)
USERS: dict[str, tuple[str, str, str, tuple[str, ...], int]] = {
    "alice": ("alice-secret-1", "Alice Liddell", "alice@example.org", ("vdi-users", "vdi-staff"), 513),
    "bob": ("bob-secret-22", "Bob Builder", "bob@example.org", ("vdi-users",), 513),
    "carol": ("carol-secret-3", "Carol Danvers", "carol@example.org", (), 1105),
    # Shares its name with a local account in the name-rule tests.
    "dave": ("dave-directory-pw", "Dave Directory", "dave@example.org", ("vdi-users",), 513),
}
# Groups: cn -> RID (AD); "Domain Users" (513) and "Lab Staff" (1105) are primary groups with no member list.
GROUPS = {"vdi-users": 1101, "vdi-staff": 1102, "Domain Users": 513, "Lab Staff": 1105}
USER_RIDS = {"alice": 1001, "bob": 1002, "carol": 1003, "dave": 1004}

AD_SCHEMA = """
attributetype ( 1.3.6.1.4.1.4203.666.77.1 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.77.2 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.77.3 NAME 'primaryGroupID'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.77.4 NAME 'objectSid'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.77.10 NAME 'user' SUP top AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName $ primaryGroupID $ objectSid ) )
objectclass ( 1.3.6.1.4.1.4203.666.77.11 NAME 'group' SUP top AUXILIARY
  MAY ( sAMAccountName $ objectSid ) )
"""


def sid_bytes(*sub_authorities: int) -> bytes:
    """A binary SID S-1-5-<sub authorities>."""
    return (
        bytes([1, len(sub_authorities)])
        + (5).to_bytes(6, "big")
        + b"".join(struct.pack("<I", s) for s in sub_authorities)
    )


def free_port() -> int:
    # Claimed for the rest of the run: an ephemeral port could be taken by a concurrent run.
    return allocate_port()


@dataclass
class DirectoryServer:
    kind: str  # "ldap" or "ad"
    rundir: Path
    port: int
    ldaps_port: int
    ca_file: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    front: UPNBindFront | None = None
    people_dn: str = f"ou=people,{SUFFIX}"
    groups_dn: str = f"ou=groups,{SUFFIX}"

    @property
    def url(self) -> str:
        """The URL clients use (for AD: the front that resolves user@domain binds)."""
        return f"ldap://127.0.0.1:{self.front.port if self.front else self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def user_dn(self, name: str) -> str:
        return f"uid={name},{self.people_dn}"

    def group_dn(self, cn: str) -> str:
        return f"cn={cn},{self.groups_dn}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def bind_names(self) -> list[str]:
        """Every bind name slapd saw so far, in order (from its stats log)."""
        return re.findall(r'BIND dn="([^"]*)" method=', self.log_text())

    def admin(self) -> ldap3.Connection:
        server = ldap3.Server("127.0.0.1", port=self.port, get_info=ldap3.NONE)
        return ldap3.Connection(server, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True, raise_exceptions=True)

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _slapd_conf(rundir: Path, *, ad: bool, crt: Path, key: Path, ca: Path) -> str:
    schemas = ["core", "cosine", "inetorgperson", "nis"]
    includes = "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in schemas)
    if ad:
        (rundir / "ad.schema").write_text(AD_SCHEMA)
        includes += f"\ninclude {rundir / 'ad.schema'}"
    return f"""{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload refint
pidfile {rundir}/slapd.pid
argsfile {rundir}/slapd.args
TLSCACertificateFile {ca}
TLSCertificateFile {crt}
TLSCertificateKeyFile {key}
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {rundir}/db
index objectClass eq
index uid eq
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
overlay refint
refint_attributes member
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"""


def _populate(server: DirectoryServer, *, ad: bool) -> None:
    conn = server.admin()
    try:
        conn.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
        conn.add(server.people_dn, ["organizationalUnit"], {"ou": "people"})
        conn.add(server.groups_dn, ["organizationalUnit"], {"ou": "groups"})
        conn.add(
            SERVICE_DN,
            ["simpleSecurityObject", "organizationalRole"],
            {"cn": "vdi-service", "userPassword": SERVICE_PASSWORD},
        )
        for uid_number, (name, (password, display, mail, _groups, primary)) in enumerate(USERS.items(), 2000):
            classes = ["inetOrgPerson", "posixAccount"] + (["user"] if ad else [])
            attrs: dict[str, object] = {
                "uid": name,
                "cn": display,
                "sn": display.split()[-1],
                "displayName": display,
                "mail": mail,
                "userPassword": password,
                "uidNumber": uid_number,
                "gidNumber": 100,
                "homeDirectory": f"/home/{name}",
            }
            if ad:
                attrs.update(
                    sAMAccountName=name,
                    userPrincipalName=f"{name}@{AD_DOMAIN}",
                    primaryGroupID=primary,
                    objectSid=sid_bytes(*DOMAIN_SID, USER_RIDS[name]),
                )
            conn.add(server.user_dn(name), classes, attrs)
        for cn, rid in GROUPS.items():
            members = [server.user_dn(u) for u, spec in USERS.items() if cn in spec[3]]
            # groupOfNames needs a member; AD primary groups list nobody, so they point at the admin DN.
            g_attrs: dict[str, object] = {"cn": cn, "member": members or [ADMIN_DN]}
            classes = ["groupOfNames"] + (["group"] if ad else [])
            if ad:
                g_attrs.update(sAMAccountName=cn, objectSid=sid_bytes(*DOMAIN_SID, rid))
            conn.add(server.group_dn(cn), classes, g_attrs)
            if conn.result["result"] != 0:
                raise RuntimeError(f"adding group {cn}: {conn.result}")
    finally:
        conn.unbind()


def start_directory(rundir: Path, *, kind: str = "ldap") -> DirectoryServer:
    refuse_service("slapd")
    ad = kind == "ad"
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "db").mkdir(exist_ok=True)
    tls = issue_certificates(rundir / "tls", subject_alt_names="IP:127.0.0.1,DNS:localhost")
    ca, crt, key = tls.ca, tls.cert, tls.key
    conf = rundir / "slapd.conf"
    conf.write_text(_slapd_conf(rundir, ad=ad, crt=crt, key=key, ca=ca))
    subprocess.run(["slaptest", "-f", str(conf), "-u"], check=True, capture_output=True)
    port, ldaps_port = free_port(), free_port()
    log_path = rundir / "slapd.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                "slapd",
                "-d",
                "stats",
                "-f",
                str(conf),
                "-h",
                f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DirectoryServer(kind, rundir, port, ldaps_port, ca, log_path, process)

    def answers() -> bool:
        if process.poll() is not None:
            return True  # exited: said below
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        return False

    try:
        eventually_blocking(answers, "slapd accepting connections")
        if process.poll() is not None:
            raise RuntimeError("slapd exited")
    except (AssertionError, RuntimeError) as exc:
        server.stop()
        raise RuntimeError(f"{exc}:\n{log_path.read_text(errors='replace')[-3000:]}") from None
    try:
        _populate(server, ad=ad)
        if ad:
            server.front = UPNBindFront(port)
            server.front.start()
    except BaseException:
        server.stop()
        raise
    return server


class UPNBindFront:
    """A TCP front for slapd that resolves ``user@domain`` bind names to DNs, as AD does."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.resolved: list[str] = []

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        future.result(timeout=10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _dn_for(self, principal: str) -> str | None:
        server = ldap3.Server("127.0.0.1", port=self.upstream_port, get_info=ldap3.NONE)
        with ldap3.Connection(server, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True) as conn:
            conn.search(
                SUFFIX,
                f"(userPrincipalName={ldap3.utils.conv.escape_filter_chars(principal)})",
                attributes=["1.1"],
            )
            entries = [e for e in conn.response if e.get("type") == "searchResEntry"]
            return entries[0]["dn"] if len(entries) == 1 else None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def downstream() -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        pump = asyncio.create_task(downstream())
        try:
            while True:
                message = await _read_ber(reader)
                if message is None:
                    break
                up_writer.write(await self._rewrite(message))
                await up_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            up_writer.close()
            await pump

    async def _rewrite(self, message: bytes) -> bytes:
        if _operation_tag(message) != 0x60:  # [APPLICATION 0] BindRequest
            return message
        decoded, _ = ber_decoder.decode(message, asn1Spec=LDAPMessage())
        op = decoded["protocolOp"]
        name = str(op["bindRequest"]["name"])
        if "@" not in name or "=" in name:
            return message
        dn = await asyncio.to_thread(self._dn_for, name)
        self.resolved.append(name)
        # An unknown principal becomes a DN that does not exist: slapd answers invalidCredentials, like AD.
        op["bindRequest"]["name"] = dn or f"cn=unknown-principal,{SUFFIX}"
        return bytes(ber_encoder.encode(decoded))


def _operation_tag(message: bytes) -> int:
    """The tag of an LDAPMessage's protocolOp: skip the SEQUENCE header and the messageID."""
    pos = 1
    length = message[pos]
    pos += 1 + (length & 0x7F if length & 0x80 else 0)
    id_length = message[pos + 1]  # messageID is a short INTEGER (0..2^31-1 fits in 4 bytes)
    return message[pos + 2 + id_length]


async def _read_ber(reader: asyncio.StreamReader) -> bytes | None:
    """One BER-framed LDAP message, or None at end of stream."""
    head = await reader.read(2)
    if not head:
        return None
    if len(head) < 2:
        head += await reader.readexactly(1)
    length = head[1]
    extra = b""
    if length & 0x80:
        extra = await reader.readexactly(length & 0x7F)
        length = int.from_bytes(extra, "big")
    body = await reader.readexactly(length)
    return head + extra + body
