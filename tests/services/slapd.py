"""OpenLDAP slapd with two directories: a classic LDAP tree and an AD look-alike.

``dc=example,dc=org`` (classic): ``ou=people`` with alice, bob, carol
(inetOrgPerson + posixAccount), ``ou=groups`` with groupOfNames ``vdi-admins``
(alice) and ``vdi-users`` (alice, bob), and a read-only service account.

``dc=corp,dc=example,dc=com`` (Active Directory layout, schema ``ldap/ad.schema``):
``cn=Users`` holds the users (``cn=Alice Smith`` with sAMAccountName,
userPrincipalName ``alice@corp.example.com``, a binary objectSid, primaryGroupID 513,
userAccountControl; carol is disabled, 514) and the groups (objectClass
``group``). One thing real AD does and OpenLDAP cannot: a *simple bind with the
UPN* (``alice@corp.example.com``) as the bind name; slapd accepts only DNs.
Clients search by sAMAccountName/userPrincipalName and bind with the DN found.

Both trees have the memberof + refint overlays, so ``memberOf`` is maintained on
users. Entries are added through the running server (ldapadd), not slapadd: the
memberof overlay only acts on live operations.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from . import report
from .ports import allocate_port, release_port
from .process import ServiceError, run, spawn, stop_process, wait_until
from .rundir import RunDir

SCHEMA_DIR = Path("/etc/ldap/schema")
AD_SCHEMA = Path(__file__).resolve().parent / "ldap" / "ad.schema"


@dataclass(frozen=True)
class LdapUser:
    name: str  # login name: uid (classic) or sAMAccountName (AD)
    dn: str
    password: str
    display_name: str
    mail: str
    groups: tuple[str, ...]  # names of the groups the user is a member of
    uid_number: int = 0
    gid_number: int = 0
    user_principal_name: str = ""  # AD only
    object_sid: str = ""  # AD only, "S-1-5-21-..." (stored in binary form)
    disabled: bool = False  # AD only (userAccountControl 514)


@dataclass
class Directory:
    """One tree: its base, admin, service account, users and groups (name -> DN)."""

    base_dn: str
    admin_dn: str
    admin_password: str
    service_dn: str
    service_password: str
    users_dn: str
    groups_dn: str
    users: dict[str, LdapUser] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    domain: str = ""  # AD DNS domain ("corp.example.com"); empty for the classic tree


PEOPLE = [
    # name, given name, surname, groups
    ("alice", "Alice", "Smith", ("vdi-admins", "vdi-users")),
    ("bob", "Bob", "Jones", ("vdi-users",)),
    ("carol", "Carol", "White", ()),
]
AD_DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"


class Slapd:
    def __init__(self, run_dir: RunDir, name: str = "slapd") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.host = "127.0.0.1"
        self.port = 0
        self.admin_password = secrets.token_urlsafe(12)
        self.passwords = {person[0]: secrets.token_urlsafe(9) for person in PEOPLE}
        self.classic = Directory(
            base_dn="dc=example,dc=org",
            admin_dn="cn=admin,dc=example,dc=org",
            admin_password=self.admin_password,
            service_dn="cn=vdi-reader,dc=example,dc=org",
            service_password=secrets.token_urlsafe(12),
            users_dn="ou=people,dc=example,dc=org",
            groups_dn="ou=groups,dc=example,dc=org",
        )
        self.ad = Directory(
            base_dn="dc=corp,dc=example,dc=com",
            admin_dn="cn=Administrator,cn=Users,dc=corp,dc=example,dc=com",
            admin_password=self.admin_password,
            service_dn="cn=svc-vdi,cn=Users,dc=corp,dc=example,dc=com",
            service_password=secrets.token_urlsafe(12),
            users_dn="cn=Users,dc=corp,dc=example,dc=com",
            groups_dn="cn=Users,dc=corp,dc=example,dc=com",
            domain="corp.example.com",
        )
        self._proc: subprocess.Popen[bytes] | None = None

    # Shortcuts for the classic tree, which most tests use.
    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def base_dn(self) -> str:
        return self.classic.base_dn

    @property
    def admin_dn(self) -> str:
        return self.classic.admin_dn

    @property
    def users(self) -> dict[str, LdapUser]:
        return self.classic.users

    @property
    def groups(self) -> dict[str, str]:
        return self.classic.groups

    def start(self) -> Slapd:
        started = time.monotonic()
        self.port = allocate_port(self.host)
        for sub in ("db-classic", "db-ad"):
            self.run_dir.sub(self.name, sub, mode=0o700)
        config = self.dir / "slapd.conf"
        config.write_text(self._config())
        run(["slaptest", "-Q", "-u", "-f", str(config)])
        ldapi = "ldapi://" + urllib.parse.quote(str(self.dir / "ldapi"), safe="")
        self._proc = spawn(
            ["slapd", "-d", "0", "-h", f"{self.url}/ {ldapi}", "-f", str(config)],
            run_id=self.run_dir.id,
            log_path=self.dir / "slapd.log",
        )
        wait_until(self._answers, what="slapd", timeout=20, log_path=self.dir / "slapd.log", proc=self._proc)
        self._seed()
        report.note(self.name, f"started slapd on {self.host}:{self.port}", time.monotonic() - started)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None
        if self.port:
            release_port(self.port)

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- helpers for tests -------------------------------------------------------------------
    def ldapadd(self, ldif: str, directory: Directory | None = None) -> None:
        """Add entries as the tree's admin (through the server, so overlays see them)."""
        tree = directory or self.classic
        run(
            ["ldapadd", "-x", "-H", self.url, "-D", tree.admin_dn, "-w", tree.admin_password],
            input=ldif,
        )

    def ldapmodify(self, ldif: str, directory: Directory | None = None) -> None:
        tree = directory or self.classic
        run(
            ["ldapmodify", "-x", "-H", self.url, "-D", tree.admin_dn, "-w", tree.admin_password],
            input=ldif,
        )

    # --- internals ---------------------------------------------------------------------------
    def _answers(self) -> bool:
        return (
            subprocess.run(
                ["ldapsearch", "-x", "-H", self.url, "-b", "", "-s", "base", "namingContexts"],
                capture_output=True,
                timeout=5,
                check=False,
            ).returncode
            == 0
        )

    def _config(self) -> str:
        rootpw = _hash(self.admin_password)
        acl = "\n".join(
            [
                "access to attrs=userPassword by self write by anonymous auth by * none",
                "access to * by users read by * none",
            ]
        )
        includes = "\n".join(
            f"include {p}"
            for p in (
                SCHEMA_DIR / "core.schema",
                SCHEMA_DIR / "cosine.schema",
                SCHEMA_DIR / "inetorgperson.schema",
                SCHEMA_DIR / "nis.schema",
                AD_SCHEMA,
            )
        )
        return f"""{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload refint
pidfile {self.dir / "slapd.pid"}
argsfile {self.dir / "slapd.args"}

database mdb
maxsize 104857600
suffix "{self.classic.base_dn}"
rootdn "{self.classic.admin_dn}"
rootpw {rootpw}
directory {self.dir / "db-classic"}
index objectClass eq
index uid eq
index member eq
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
overlay refint
refint_attributes member
{acl}

database mdb
maxsize 104857600
suffix "{self.ad.base_dn}"
rootdn "{self.ad.admin_dn}"
rootpw {rootpw}
directory {self.dir / "db-ad"}
index objectClass eq
index sAMAccountName eq
index userPrincipalName eq
index member eq
overlay memberof
memberof-group-oc group
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
overlay refint
refint_attributes member
{acl}
"""

    def _seed(self) -> None:
        self.ldapadd(self._classic_ldif(), self.classic)
        self.ldapadd(self._ad_ldif(), self.ad)

    def _classic_ldif(self) -> str:
        tree = self.classic
        entries = [
            f"dn: {tree.base_dn}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
            f"dn: {tree.users_dn}\nobjectClass: organizationalUnit\nou: people",
            f"dn: {tree.groups_dn}\nobjectClass: organizationalUnit\nou: groups",
            f"dn: {tree.service_dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
            f"cn: vdi-reader\nuserPassword: {_hash(tree.service_password)}",
        ]
        for number, (name, given, surname, groups) in enumerate(PEOPLE, start=1):
            user = LdapUser(
                name=name,
                dn=f"uid={name},{tree.users_dn}",
                password=self.passwords[name],
                display_name=f"{given} {surname}",
                mail=f"{name}@example.org",
                groups=groups,
                uid_number=10000 + number,
                gid_number=10000,
            )
            tree.users[name] = user
            entries.append(
                f"dn: {user.dn}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
                f"uid: {name}\ncn: {user.display_name}\nsn: {surname}\ngivenName: {given}\n"
                f"displayName: {user.display_name}\nmail: {user.mail}\n"
                f"uidNumber: {user.uid_number}\ngidNumber: {user.gid_number}\n"
                f"homeDirectory: /home/{name}\nloginShell: /bin/bash\nuserPassword: {_hash(user.password)}"
            )
        for group in ("vdi-admins", "vdi-users"):
            dn = f"cn={group},{tree.groups_dn}"
            tree.groups[group] = dn
            members = "\n".join(f"member: {u.dn}" for u in tree.users.values() if group in u.groups)
            entries.append(f"dn: {dn}\nobjectClass: groupOfNames\ncn: {group}\n{members}")
        return "\n\n".join(entries) + "\n"

    def _ad_ldif(self) -> str:
        tree = self.ad
        entries = [
            f"dn: {tree.base_dn}\nobjectClass: dcObject\nobjectClass: organization\ndc: corp\no: Corp",
            f"dn: {tree.users_dn}\nobjectClass: container\ncn: Users",
            f"dn: {tree.service_dn}\nobjectClass: user\ncn: svc-vdi\nsn: svc-vdi\nsAMAccountName: svc-vdi\n"
            f"userPrincipalName: svc-vdi@{tree.domain}\nuserAccountControl: 66048\n"
            f"objectSid:: {sid_ldif(f'{AD_DOMAIN_SID}-1100')}\nprimaryGroupID: 513\n"
            f"userPassword: {_hash(tree.service_password)}",
        ]
        for number, (name, given, surname, groups) in enumerate(PEOPLE, start=1):
            display = f"{given} {surname}"
            user = LdapUser(
                name=name,
                dn=f"cn={display},{tree.users_dn}",
                password=self.passwords[name],
                display_name=display,
                mail=f"{name}@{tree.domain}",
                groups=groups,
                user_principal_name=f"{name}@{tree.domain}",
                object_sid=f"{AD_DOMAIN_SID}-{1100 + number}",
                disabled=name == "carol",
            )
            tree.users[name] = user
            entries.append(
                f"dn: {user.dn}\nobjectClass: user\ncn: {display}\nsn: {surname}\ngivenName: {given}\n"
                f"displayName: {display}\nmail: {user.mail}\nsAMAccountName: {name}\n"
                f"userPrincipalName: {user.user_principal_name}\nobjectSid:: {sid_ldif(user.object_sid)}\n"
                f"primaryGroupID: 513\nuserAccountControl: {514 if user.disabled else 512}\n"
                f"userPassword: {_hash(user.password)}"
            )
        # "Domain Users" is every user's primary group: in AD it is *not* listed in memberOf.
        tree.groups["Domain Users"] = f"cn=Domain Users,{tree.users_dn}"
        entries.append(
            f"dn: {tree.groups['Domain Users']}\nobjectClass: group\ncn: Domain Users\n"
            f"sAMAccountName: Domain Users\nobjectSid:: {sid_ldif(f'{AD_DOMAIN_SID}-513')}\n"
            "groupType: -2147483646"
        )
        for rid, group in ((1201, "vdi-admins"), (1202, "vdi-users")):
            dn = f"cn={group},{tree.groups_dn}"
            tree.groups[group] = dn
            members = "\n".join(f"member: {u.dn}" for u in tree.users.values() if group in u.groups)
            entries.append(
                f"dn: {dn}\nobjectClass: group\ncn: {group}\nsAMAccountName: {group}\n"
                f"objectSid:: {sid_ldif(f'{AD_DOMAIN_SID}-{rid}')}\ngroupType: -2147483646\n{members}"
            )
        return "\n\n".join(entries) + "\n"


def sid_bytes(sid: str) -> bytes:
    """Binary form of "S-1-5-21-a-b-c-rid" (MS-DTYP 2.4.2.2), as AD stores objectSid."""
    parts = sid.split("-")
    if parts[0] != "S":
        raise ValueError(sid)
    revision, authority, subs = int(parts[1]), int(parts[2]), [int(p) for p in parts[3:]]
    return (
        bytes([revision, len(subs)])
        + authority.to_bytes(6, "big")
        + b"".join(s.to_bytes(4, "little") for s in subs)
    )


def sid_ldif(sid: str) -> str:
    """The SID base64-encoded for an LDIF ``objectSid::`` line."""
    return base64.b64encode(sid_bytes(sid)).decode()


def _hash(password: str) -> str:
    out = run(["slappasswd", "-h", "{SSHA}", "-s", password]).stdout.strip()
    if not out.startswith("{SSHA}"):
        raise ServiceError(f"slappasswd gave {out!r}")
    return out
