"""A real SMTP server for the alert tests: aiosmtpd in a process of its own, delivering to a Maildir.

Started once per session; :meth:`SmtpServer.messages` reads what arrived (each with the
envelope's ``X-RcptTo``). No AUTH, no TLS: the dashboard's plain SMTP path.
"""

from __future__ import annotations

import email
import email.policy
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from . import report
from .ports import allocate_port, release_port
from .process import spawn, stop_process, wait_until
from .rundir import RunDir


class SmtpServer:
    def __init__(self, run_dir: RunDir, name: str = "smtp") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def maildir(self) -> Path:
        return self.dir / "Maildir"

    def start(self) -> SmtpServer:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = allocate_port()
        log_path = self.dir / "aiosmtpd.log"
        self._proc = spawn(
            [
                sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{self.host}:{self.port}",
                "-c", "aiosmtpd.handlers.Mailbox", str(self.maildir),
            ],
            run_id=self.run_dir.id,
            log_path=log_path,
        )  # fmt: skip
        wait_until(self._answers, what="aiosmtpd", timeout=30, log_path=log_path, proc=self._proc)
        report.note(self.name, f"started aiosmtpd on {self.host}:{self.port}", time.monotonic() - started)
        return self

    def _answers(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as sock:
            return sock.recv(64).startswith(b"220")

    def messages(self) -> list[EmailMessage]:
        """Every message delivered so far, oldest first."""
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        paths = sorted(new.iterdir(), key=lambda path: path.stat().st_mtime_ns)
        return [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in paths]

    def stop(self) -> None:
        stop_process(self._proc, timeout=10)
        self._proc = None
        if self.port:
            release_port(self.port)
            self.port = 0
