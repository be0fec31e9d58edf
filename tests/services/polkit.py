"""A private system D-Bus and polkitd: what libvirt's access control asks before every call.

``dbus-daemon`` runs with Debian's own system-bus policy (``/usr/share/dbus-1/system.conf``
and its ``system.d`` rules, among them polkit's) but listens on a socket in the run dir,
without a pid file, syslog or service activation. ``polkitd`` (it drops to its ``polkitd``
user by itself) connects to that bus through ``DBUS_SYSTEM_BUS_ADDRESS``, in a mount
namespace of its own where ``/etc/polkit-1/rules.d`` is a directory of the run dir: the
machine's rules stay untouched, and a program under test writes its rules there. libvirtd
gets the same ``DBUS_SYSTEM_BUS_ADDRESS`` (see :class:`~tests.services.libvirt_host.LibvirtHost`).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from types import TracebackType

from . import report
from .process import spawn, stop_process, wait_until
from .rundir import RunDir

SYSTEM_BUS_CONFIG = Path("/usr/share/dbus-1/system.conf")
POLKITD = Path("/usr/lib/polkit-1/polkitd")
RULES_DIR = "/etc/polkit-1/rules.d"
POLKIT_NAME = "org.freedesktop.PolicyKit1"


def bus_config(socket_path: Path) -> str:
    """Debian's system-bus configuration, listening on ``socket_path`` and nothing machine-wide."""
    text = SYSTEM_BUS_CONFIG.read_text()
    # Run as root (no <user>) in the foreground, no pid file, no syslog, no activation of services.
    for element in ("user", "servicehelper", "pidfile"):
        text = re.sub(rf"\s*<{element}>[^<]*</{element}>", "", text)
    text = re.sub(r"\s*<(fork|syslog|standard_system_servicedirs)/>", "", text)
    text, listens = re.subn(r"<listen>[^<]*</listen>", f"<listen>unix:path={socket_path}</listen>", text)
    # The policy files of system services (polkit's among them), relative to the stock file.
    system_d = SYSTEM_BUS_CONFIG.parent / "system.d"
    text = text.replace("<includedir>system.d</includedir>", f"<includedir>{system_d}</includedir>")
    if listens != 1:
        raise RuntimeError(f"unexpected {SYSTEM_BUS_CONFIG}: {listens} <listen> elements")
    return text


class PolkitServices:
    """The bus and polkitd, started and stopped together."""

    def __init__(self, run_dir: RunDir, name: str = "polkit") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.socket_path = self.dir / "system_bus_socket"
        self.rules_dir = self.dir / "rules.d"
        self._bus: subprocess.Popen[bytes] | None = None
        self._polkitd: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The value for ``DBUS_SYSTEM_BUS_ADDRESS``."""
        return f"unix:path={self.socket_path}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def start(self) -> PolkitServices:
        started = time.monotonic()
        self.run_dir.sub(self.name)
        # polkitd reads its rules as user polkitd.
        self.rules_dir.mkdir(mode=0o755, exist_ok=True)
        self.rules_dir.chmod(0o755)
        config = self.dir / "system.conf"
        config.write_text(bus_config(self.socket_path))
        self._bus = spawn(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"],
            run_id=self.run_dir.id,
            log_path=self.dir / "dbus.out",
        )
        wait_until(
            lambda: self._bus_call("GetId").returncode == 0,
            what="system D-Bus",
            timeout=30,
            proc=self._bus,
            log_path=self.dir / "dbus.out",
        )
        holder = f'mount --bind "{self.rules_dir}" {RULES_DIR}\nexec "{POLKITD}" --no-debug\n'
        self._polkitd = spawn(
            ["unshare", "--mount", "--propagation", "private", "sh", "-ec", holder],
            run_id=self.run_dir.id,
            log_path=self.dir / "polkitd.out",
            env=self.env(),
        )
        wait_until(
            self._polkit_on_bus,
            what="polkitd on the system bus",
            timeout=30,
            proc=self._polkitd,
            log_path=self.dir / "polkitd.out",
        )
        report.note(
            self.name, "started dbus-daemon (system bus policy) + polkitd", time.monotonic() - started
        )
        return self

    def stop(self) -> None:
        stop_process(self._polkitd, timeout=10)
        self._polkitd = None
        stop_process(self._bus, timeout=10)
        self._bus = None

    def authorizes(self, user: str, action_id: str) -> bool:
        """polkitd's answer for a process of ``user`` (pkcheck asking about itself)."""
        result = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                "sh",
                "-c",
                'exec pkcheck --action-id "$0" --process $$',
                action_id,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=self.env(),
        )
        if result.returncode not in (0, 1):
            raise RuntimeError(f"pkcheck {action_id} as {user}: {result.returncode} {result.stderr.strip()}")
        return result.returncode == 0

    def log(self) -> str:
        """What polkitd said (rule errors, polkit.log() lines)."""
        path = self.dir / "polkitd.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def _bus_call(self, method: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["dbus-send", f"--bus={self.address}", "--print-reply", "--dest=org.freedesktop.DBus",
             "/org/freedesktop/DBus", f"org.freedesktop.DBus.{method}", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )  # fmt: skip

    def _polkit_on_bus(self) -> bool:
        return "boolean true" in self._bus_call("NameHasOwner", f"string:{POLKIT_NAME}").stdout

    def __enter__(self) -> PolkitServices:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
