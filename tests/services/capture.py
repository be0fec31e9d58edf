"""A passive packet capture on a hypervisor's side: tcpdump inside its network namespace.

What a network observer between the dashboard and the hypervisor would record. Tests then
look for what must never cross the wire in clear (SPICE's link magic, a password).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

from .netns import NetNamespace
from .process import spawn, stop_process, wait_until


class PacketCapture:
    def __init__(self, net: NetNamespace, path: Path, *, run_id: str) -> None:
        self.net = net
        self.path = path
        self.run_id = run_id
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = path

    def __enter__(self) -> PacketCapture:
        log = self.path.with_name(self.path.name + ".tcpdump.log")
        self.log = log
        # Everything but SSH (the dashboard's own management connection).
        self._proc = spawn(
            [*self.net.exec_prefix(), "tcpdump", "-i", "any", "-U", "-s", "0", "-w", str(self.path),
             "tcp and not port 22"],
            run_id=self.run_id,
            log_path=log,
        )  # fmt: skip
        # tcpdump says "listening on ..." once its socket is open: nothing is missed after that.
        wait_until(lambda: "listening on" in log.read_text(), what="tcpdump", timeout=20, proc=self._proc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # -U has written every packet as it came; SIGTERM ends the capture cleanly.
        stop_process(self._proc, timeout=10)

    def data(self) -> bytes:
        return self.path.read_bytes()

    def summary(self) -> str:
        """tcpdump's own account (packets captured, dropped), for assertion messages."""
        return self.log.read_text()[-500:]
