"""A real RDP server (xrdp + xrdp-sesman + xorgxrdp) in a network namespace of its own.

The RDP failover of a pool sends users to an RDP host; this is that host. xrdp
listens on a port from :mod:`tests.services.ports` on the namespace's address, so
the launcher's ``/v:HOST:PORT`` is exercised too. A log-in starts a real Xorg
session (the xorgxrdp driver) for the local account :data:`RDP_USER`, whose
session script paints the screen :data:`SESSION_RGB` and opens an xterm titled
:data:`SESSION_TITLE`: what a test sees through the client is that desktop.

xrdp finds xrdp-sesman through the hard-coded ``/etc/xrdp/sesman.ini``, and the
X servers of its sessions take display numbers and lock files in ``/tmp``. So
both daemons run in a private mount namespace (``unshare -m``) where
``/etc/xrdp`` and ``/run/xrdp`` are bind mounts of directories in the run dir and
``/tmp`` is a tmpfs of its own: nothing is shared with the machine or another run.
The account's home directory (``/run/xrdp/home``) exists only in there.

The account is created once per machine and left in place, like the hypervisors'
service user; its password is a test constant (the account has no shell and only
this namespaced server accepts passwords for it). The server's TLS certificate
is made per run for its address and signed by a CA of the run's own
(:attr:`XrdpServer.ca_file`); :attr:`XrdpServer.certificate_sha256` is its fingerprint.
"""

from __future__ import annotations

import fcntl
import hashlib
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from types import TracebackType

from . import report
from .netns import NetNamespace
from .ports import allocate_port, release_port
from .process import descendants, kill_pid, pids_mounting, run, spawn, stop_process, wait_until
from .rundir import RunDir

RDP_USER = "kvmvdi-rdp"
RDP_PASSWORD = "rdp-failover-Passw0rd"
HOME = "/run/xrdp/home"
# What the session shows: a root window of this colour and an xterm with this title.
SESSION_RGB = (0x2E, 0x8B, 0x57)
SESSION_TITLE = "KVM-VDI RDP failover session"


def ensure_rdp_user() -> None:
    """The local account RDP users log in as (idempotent; safe when two runs race)."""
    with open("/tmp/kvmvdi-test-useradd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(RDP_USER)
        except KeyError:
            run(["useradd", "--no-create-home", "--home-dir", HOME, "--shell", "/usr/sbin/nologin", RDP_USER])
        run(["chpasswd"], input=f"{RDP_USER}:{RDP_PASSWORD}\n")


def set_ini(text: str, section: str, key: str, value: str) -> str:
    """``key=value`` in ``[section]`` of an xrdp ini file (replaced, or added at the section's top)."""
    match = re.search(rf"^\[{re.escape(section)}\]\n", text, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"no [{section}] section")
    end = re.compile(r"^\[", flags=re.MULTILINE).search(text, match.end())
    stop = end.start() if end else len(text)
    body = text[match.end() : stop]
    line = f"{key}={value}\n"
    body, count = re.subn(rf"^{re.escape(key)}=.*\n", line, body, count=1, flags=re.MULTILINE)
    if count == 0:
        body = line + body
    return text[: match.end()] + body + text[stop:]


class XrdpServer:
    def __init__(self, run_dir: RunDir, name: str = "xrdp") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.net = NetNamespace(run_dir, "rdp")
        self.username = RDP_USER
        self.password = RDP_PASSWORD
        self.port = 0
        self.sesman_port = 0
        self.certificate_sha256 = ""
        self._holder: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.net.address

    @property
    def host(self) -> str:
        """What a pool's RDP failover names: ``ADDRESS:PORT``."""
        return f"{self.address}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the server's certificate (a thin client trusting it needs no pin)."""
        return self.dir / "ca" / "ca.pem"

    @property
    def log_dir(self) -> Path:
        return self.dir / "run" / "log"

    def start(self) -> XrdpServer:
        started = time.monotonic()
        ensure_rdp_user()
        self.port = allocate_port()
        self.sesman_port = allocate_port()
        self.net.start()
        self._write_config()
        self._launch()
        wait_until(
            self._answers, what="xrdp", timeout=60, log_path=self.dir / "daemons.out", proc=self._holder
        )
        report.note(self.name, f"started xrdp on {self.host}", time.monotonic() - started)
        return self

    def _write_config(self) -> None:
        etc = self.dir / "etc"
        home = self.dir / "run" / "home"
        self.dir.mkdir(parents=True, exist_ok=True)
        # -L: the packaged cert.pem/key.pem are symlinks; ours replace them below.
        run(["cp", "-aL", "/etc/xrdp/.", str(etc)])
        self.log_dir.mkdir(parents=True)
        home.mkdir(parents=True)
        shutil.chown(home, RDP_USER)
        home.chmod(0o700)
        self._make_certificate(etc)
        xrdp = (etc / "xrdp.ini").read_text()
        for key, value in {
            "port": f"tcp://{self.address}:{self.port}",
            "certificate": "/etc/xrdp/cert.pem",
            "key_file": "/etc/xrdp/key.pem",
        }.items():
            xrdp = set_ini(xrdp, "Globals", key, value)
        xrdp = set_ini(xrdp, "Logging", "LogFile", "/run/xrdp/log/xrdp.log")
        xrdp = set_ini(xrdp, "Logging", "EnableSyslog", "false")
        (etc / "xrdp.ini").write_text(xrdp)
        sesman = (etc / "sesman.ini").read_text()
        for section, key, value in [
            ("Globals", "ListenAddress", "127.0.0.1"),
            ("Globals", "ListenPort", str(self.sesman_port)),
            ("Globals", "EnableUserWindowManager", "false"),
            ("Globals", "DefaultWindowManager", "session.sh"),
            ("Security", "AllowRootLogin", "false"),
            # A client that goes away ends its session: nothing lingers until teardown.
            ("Sessions", "KillDisconnected", "true"),
            ("Logging", "LogFile", "/run/xrdp/log/sesman.log"),
            ("Logging", "EnableSyslog", "false"),
            ("Chansrv", "EnableFuseMount", "false"),
            ("ChansrvLogging", "EnableSyslog", "false"),
        ]:
            sesman = set_ini(sesman, section, key, value)
        (etc / "sesman.ini").write_text(sesman)
        r, g, b = SESSION_RGB
        session = etc / "session.sh"
        session.write_text(
            "#!/bin/sh\n"
            "# The RDP desktop a test expects to see through the client.\n"
            f"xsetroot -solid '#{r:02x}{g:02x}{b:02x}'\n"
            f"exec xterm -geometry 60x6+40+40 -T '{SESSION_TITLE}' "
            "-e sh -c 'echo KVM-VDI RDP failover; exec sleep infinity'\n"
        )
        session.chmod(0o755)

    def _make_certificate(self, etc: Path) -> None:
        """The server's certificate for its address, signed by a CA of the run's own (``ca_file``)."""
        ca = self.dir / "ca"
        ca.mkdir(exist_ok=True)
        key, csr, cert = etc / "key.pem", ca / "server.csr", etc / "cert.pem"
        for path in (key, cert):
            path.unlink(missing_ok=True)
        (ca / "server.ext").write_text(f"subjectAltName=IP:{self.address}\nextendedKeyUsage=serverAuth\n")
        new_key = ["openssl", "req", "-newkey", "rsa:2048", "-nodes"]
        run(
            [
                *new_key, "-x509", "-days", "2", "-subj", "/CN=KVM-VDI test RDP CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                "-keyout", str(ca / "ca.key"), "-out", str(self.ca_file),
            ]
        )  # fmt: skip
        run([*new_key, "-subj", f"/CN={self.address}", "-keyout", str(key), "-out", str(csr)])
        run(
            [
                "openssl", "x509", "-req", "-in", str(csr), "-days", "2", "-extfile", str(ca / "server.ext"),
                "-CA", str(self.ca_file), "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-out", str(cert),
            ]
        )  # fmt: skip
        key.chmod(0o600)
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        self.certificate_sha256 = hashlib.sha256(der).hexdigest()

    def _launch(self) -> None:
        init = self.dir / "init.sh"
        init.write_text(
            f"""#!/bin/sh
# Runs under tini -s in the private mount namespace of the RDP server, in its network namespace.
set -eu
mount --bind "{self.dir / "etc"}" /etc/xrdp
mount --bind "{self.dir / "run"}" /run/xrdp
mount -t tmpfs -o mode=1777,size=64M kvmvdi-rdp-tmp /tmp
xrdp-sesman --nodaemon --config /etc/xrdp/sesman.ini &
xrdp --nodaemon --config /etc/xrdp/xrdp.ini &
wait
"""
        )
        Path("/run/xrdp").mkdir(exist_ok=True)  # the bind mount's target; empty in the root fs
        argv = ["unshare", "--mount", "--propagation", "private", "tini", "-s", "--", "/bin/sh", str(init)]
        self._holder = spawn(
            [*self.net.exec_prefix(), *argv], run_id=self.run_dir.id, log_path=self.dir / "daemons.out"
        )

    def _answers(self) -> bool:
        if not (self.log_dir / "sesman.log").exists():
            return False
        with socket.create_connection((self.address, self.port), timeout=2):
            return True

    def session_pids(self) -> list[int]:
        """The processes of the desktop sessions (the session script's xterm), as the account's user."""
        uid = pwd.getpwnam(RDP_USER).pw_uid
        found = []
        for pid in pids_mounting(self.dir):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                owner = Path(f"/proc/{pid}").stat().st_uid
            except OSError:
                continue
            if comm == "xterm" and owner == uid:
                found.append(pid)
        return found

    def log_off(self) -> None:
        """The user logs off: the session's program ends, and the server ends the session."""
        for pid in self.session_pids():
            kill_pid(pid, timeout=5)

    def log_text(self) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self._holder is not None:
            # Sessions (Xorg, the session script, chansrv) are the daemons' descendants.
            children = descendants(self._holder.pid)
            stop_process(self._holder, timeout=10)
            for pid in children:
                kill_pid(pid, timeout=5)
            for pid in pids_mounting(self.dir):
                kill_pid(pid, timeout=5)
            self._holder = None
        self.net.stop()
        for port in (self.port, self.sesman_port):
            if port:
                release_port(port)
        self.port = self.sesman_port = 0

    def __enter__(self) -> XrdpServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
