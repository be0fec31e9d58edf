"""A real Active Directory domain controller (Samba 4) in a network namespace.

What slapd with ``ldap/ad.schema`` cannot do, this can: simple binds with the
user principal name (``alice@corp.example.com``) or ``CORP\\alice``, binary
objectSid, primaryGroupID, tokenGroups, AD's own schema and ACLs. The DC is
provisioned fresh for each run (``samba-tool domain provision``, ~6 s) into the
run dir and serves only LDAP, CLDAP and Kerberos, on port 389 of its own network
namespace (AD's ports are fixed, so each run needs its own address).

Domain ``corp.example.com`` (NetBIOS ``CORP``); users alice, bob, carol (carol
disabled) with known passwords; groups vdi-admins (alice) and vdi-users (alice,
bob). Plain-text simple binds are allowed (``ldap server require strong auth =
no``); the DC also answers ldaps:// on 636 with a self-signed certificate.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from . import report
from .netns import NetNamespace
from .process import ServiceError, descendants, kill_pid, log_tail, run, spawn, stop_process, wait_until
from .rundir import RunDir
from .slapd import PEOPLE, LdapUser

REALM = "CORP.EXAMPLE.COM"
DOMAIN = "corp.example.com"
NETBIOS = "CORP"
BASE_DN = "DC=corp,DC=example,DC=com"

# Runs under Debian's /usr/bin/python3, which has Samba's bindings (the venv does not).
SEED_SCRIPT = r"""
import json, sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

spec = json.load(sys.stdin)
lp = LoadParm()
lp.load(spec["conf"])
db = SamDB(url=spec["sam"], session_info=system_session(), lp=lp)
for user in spec["users"]:
    # useusernameascn=None: CN is the display name ("Alice Smith"), as AD admins usually do
    db.newuser(user["name"], user["password"], givenname=user["given"], surname=user["surname"],
               mailaddress=user["mail"], useusernameascn=None)
for group, members in spec["groups"].items():
    db.newgroup(group)
    if members:
        db.add_remove_group_members(group, members, add_members_operation=True)
for name in spec["disabled"]:
    db.disable_account("(sAMAccountName=%s)" % name)
out = {}
for user in spec["users"]:
    res = db.search(base=db.domain_dn(), expression="(sAMAccountName=%s)" % user["name"], attrs=["objectSid"])
    sid = db.schema_format_value("objectSid", res[0]["objectSid"][0]).decode()
    out[user["name"]] = {"dn": str(res[0].dn), "sid": sid}
groups = {}
for group in spec["groups"]:
    res = db.search(base=db.domain_dn(), expression="(sAMAccountName=%s)" % group, attrs=["cn"])
    groups[group] = str(res[0].dn)
json.dump({"users": out, "groups": groups}, sys.stdout)
"""


def _complex_password() -> str:
    # AD's default policy wants three of: upper, lower, digit, symbol.
    return secrets.token_urlsafe(10) + "aZ7!"


class SambaAD:
    def __init__(self, run_dir: RunDir, name: str = "samba-ad") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.net = NetNamespace(run_dir, "ad")
        self.realm = REALM
        self.domain = DOMAIN
        self.netbios = NETBIOS
        self.base_dn = BASE_DN
        self.admin_password = _complex_password()
        self.users: dict[str, LdapUser] = {}
        self.groups: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.net.address

    @property
    def url(self) -> str:
        return f"ldap://{self.address}"

    @property
    def admin_upn(self) -> str:
        return f"Administrator@{self.domain}"

    def start(self) -> SambaAD:
        started = time.monotonic()
        self.net.start()
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / "dc"
        (self.dir / "run").mkdir(exist_ok=True)
        options = {
            "interfaces": f"{self.address}/30",
            "bind interfaces only": "yes",
            "server services": "ldap, cldap, kdc",
            "log file": str(self.dir / "log.%m"),
            "pid directory": str(self.dir / "run"),
        }
        with open(self.dir / "provision.log", "wb") as log:
            rc = subprocess.run(
                [
                    "samba-tool", "domain", "provision", f"--realm={REALM}", f"--domain={NETBIOS}",
                    "--server-role=dc", "--dns-backend=NONE", "--use-rfc2307", "--host-name=dc1",
                    f"--adminpass={self.admin_password}", f"--targetdir={target}",
                    *(f"--option={k} = {v}" for k, v in options.items()),
                ],
                stdout=log, stderr=subprocess.STDOUT, timeout=300, check=False,
            ).returncode  # fmt: skip
        if rc != 0:
            raise ServiceError(
                f"samba-tool domain provision failed ({rc})\n{log_tail(self.dir / 'provision.log')}"
            )
        conf = target / "etc" / "smb.conf"
        # provision drops options it does not know from --option; add them to [global] here.
        conf.write_text(
            conf.read_text().replace(
                "[global]\n",
                "[global]\n\tldap server require strong auth = no\n\tdns proxy = no\n",
                1,
            )
        )
        self._seed(conf, target / "private" / "sam.ldb")
        self._proc = spawn(
            [
                *self.net.exec_prefix(),
                "samba",
                "--foreground",
                "--no-process-group",
                "--debug-stdout",
                "-s",
                str(conf),
            ],
            run_id=self.run_dir.id,
            log_path=self.dir / "samba.log",
        )
        wait_until(
            self._answers, what="samba AD DC", timeout=60, log_path=self.dir / "samba.log", proc=self._proc
        )
        report.note(
            self.name, f"started Samba AD DC {self.domain} on {self.address}:389", time.monotonic() - started
        )
        return self

    def _seed(self, conf: Path, sam: Path) -> None:
        passwords = {name: _complex_password() for name, *_ in PEOPLE}
        spec = {
            "conf": str(conf),
            "sam": str(sam),
            "users": [
                {"name": n, "password": passwords[n], "given": g, "surname": s, "mail": f"{n}@{DOMAIN}"}
                for n, g, s, _groups in PEOPLE
            ],
            "groups": {
                group: [n for n, _g, _s, groups in PEOPLE if group in groups]
                for group in ("vdi-admins", "vdi-users")
            },
            "disabled": ["carol"],
        }
        out = json.loads(
            run(["/usr/bin/python3", "-c", SEED_SCRIPT], input=json.dumps(spec), timeout=120).stdout
        )
        self.groups = dict(out["groups"])
        for name, given, surname, groups in PEOPLE:
            self.users[name] = LdapUser(
                name=name,
                dn=out["users"][name]["dn"],
                password=passwords[name],
                display_name=f"{given} {surname}",
                mail=f"{name}@{DOMAIN}",
                groups=groups,
                user_principal_name=f"{name}@{DOMAIN}",
                object_sid=out["users"][name]["sid"],
                disabled=name == "carol",
            )

    def _answers(self) -> bool:
        with socket.create_connection((self.address, 389), timeout=2):
            pass
        return (
            subprocess.run(
                ["ldapsearch", "-x", "-H", self.url, "-b", "", "-s", "base", "defaultNamingContext"],
                capture_output=True,
                timeout=10,
                check=False,
            ).returncode
            == 0
        )

    def stop(self) -> None:
        if self._proc is not None:
            # samba's prefork workers are its descendants; take them down with it.
            children = descendants(self._proc.pid)
            stop_process(self._proc, timeout=15)
            for pid in children:
                kill_pid(pid, timeout=5)
            self._proc = None
        self.net.stop()

    def __enter__(self) -> SambaAD:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
