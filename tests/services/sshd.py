"""An OpenSSH server of its own: host key, config and authorized keys in the run dir.

Public-key login only (``UsePAM no``, no passwords), on a free loopback port or on
a given address (inside a network namespace). ``enter`` is an argv prefix that
runs sshd inside other namespaces (``nsenter ...``): a hypervisor's sshd must see
that hypervisor's private /run/libvirt.

The test service user (``kvmvdi-test``, groups libvirt and kvm) is created once per
machine and left in place; :func:`ensure_test_user` is idempotent and safe when
two runs race.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from . import report
from .ports import allocate_port, release_port
from .process import descendants, run, spawn, stop_process, wait_until
from .rundir import RunDir

TEST_USER = "kvmvdi-test"
TEST_USER_GROUPS = ("libvirt", "kvm")


def ensure_test_user(name: str = TEST_USER, groups: Sequence[str] = TEST_USER_GROUPS) -> None:
    """Create the unprivileged service account the hypervisor tests log in as."""
    with open("/tmp/kvmvdi-test-useradd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = [g for g in groups if _group_exists(g)]
        try:
            pwd.getpwnam(name)
        except KeyError:
            run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", ",".join(wanted), name])
        else:
            run(["usermod", "--append", "--groups", ",".join(wanted), name])
        # useradd leaves the password field "!" (locked); with UsePAM no, sshd then refuses
        # even key logins. "*" means: no password, account usable.
        run(["usermod", "-p", "*", name])


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair at ``path`` (replacing one); returns the public key line."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


class SshServer:
    def __init__(
        self,
        run_dir: RunDir,
        name: str = "sshd",
        *,
        address: str = "127.0.0.1",
        port: int | None = None,
        user: str = TEST_USER,
        enter: Sequence[str] = (),
        directory: Path | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.name = name
        self.address = address
        self.user = user
        self._fixed_port = port
        self.port: int = port or 0
        self._enter = list(enter)
        self.dir: Path = directory or run_dir.path / name
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.authorized_dir = self.dir / "authorized_keys"
        # A client key pair authorized for the service user from the start.
        self.client_key_path = self.dir / "client_key"
        self.client_public_key = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._starts = 0

    # --- life cycle --------------------------------------------------------------------------
    def start(self) -> SshServer:
        started = time.monotonic()
        if not self._prepared:
            self._prepare()
        # sshd's privilege separation directory; Debian creates it only from its init script.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        run([*self._enter, "/usr/sbin/sshd", "-t", "-f", str(self.config_path)])
        self._proc = spawn(
            [*self._enter, "/usr/sbin/sshd", "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
            run_id=self.run_dir.id,
            log_path=self.dir / "sshd.out",
        )
        wait_until(
            self._answers, what=f"sshd {self.name}", timeout=20, log_path=self.log_path, proc=self._proc
        )
        verb = "restarted" if self._starts else "started"
        self._starts += 1
        report.note(self.name, f"{verb} sshd on {self.address}:{self.port}", time.monotonic() - started)
        return self

    def stop(self) -> None:
        """Stop the listener and every session it started (as a host that goes down would)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            # Sessions first: once the listener is gone they would be reparented out of reach.
            for pid in self._session_pids(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stop_process(proc, timeout=10)

    def close(self) -> None:
        """Stop for good: also give the port back."""
        self.stop()
        if self._fixed_port is None and self.port:
            release_port(self.port)
            self.port = 0

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- keys --------------------------------------------------------------------------------
    def host_key_line(self) -> str:
        """The host's public key, ``ssh-ed25519 AAAA...`` (no comment)."""
        fields = self.host_key_path.with_name(self.host_key_path.name + ".pub").read_text().split()
        return f"{fields[0]} {fields[1]}"

    def known_hosts_line(self) -> str:
        """``[ADDR]:PORT ssh-ed25519 AAAA...``, as OpenSSH writes it to known_hosts."""
        return f"[{self.address}]:{self.port} {self.host_key_line()}"

    def regenerate_host_key(self) -> str:
        """A new host key (a reinstalled host, or an attacker); restarts a running sshd."""
        line = keygen(self.host_key_path, f"{self.name}-host")
        if self.running:
            self.restart()
        return line

    def authorize(self, public_key_line: str, user: str | None = None) -> None:
        """Let the holder of this public key log in as ``user`` (default: the service user)."""
        path = self.authorized_dir / (user or self.user)
        existing = path.read_text().splitlines() if path.exists() else []
        if public_key_line.strip() not in existing:
            path.write_text("\n".join([*existing, public_key_line.strip()]) + "\n")
        path.chmod(0o644)

    def ssh_argv(self, *command: str, user: str | None = None, key: Path | None = None) -> list[str]:
        """An ``ssh`` command line that logs in here with the client key, trusting any host key."""
        return [
            "ssh",
            "-i", str(key or self.client_key_path),
            "-p", str(self.port),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            f"{user or self.user}@{self.address}",
            *command,
        ]  # fmt: skip

    # --- internals ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        ensure_test_user(self.user)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.authorized_dir.mkdir(exist_ok=True)
        self.authorized_dir.chmod(0o755)
        if self.port == 0:
            self.port = allocate_port(self.address)
        keygen(self.host_key_path, f"{self.name}-host")
        self.client_public_key = keygen(self.client_key_path, f"{self.name}-client")
        self.authorize(self.client_public_key)
        self.config_path.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_dir}/%u",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    # the run dir is not owned by the users who log in
                    "StrictModes no",
                    "AllowTcpForwarding yes",
                    "AllowStreamLocalForwarding yes",
                    "MaxStartups 100:30:200",
                    "MaxSessions 100",
                    "LogLevel VERBOSE",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        self._prepared = True

    def _answers(self) -> bool:
        with socket.create_connection((self.address, self.port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"SSH-")

    @staticmethod
    def _session_pids(listener: int) -> list[int]:
        """All descendants of the listener: per-connection sshd processes and their sessions."""
        return descendants(listener)
