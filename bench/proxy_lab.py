"""Processes of the proxy benchmark: start, stop (by pid, the whole tree) and measure them
from /proc (CPU seconds, RSS and PSS of a process and its descendants)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_proc(path: str) -> str:
    with open(path) as f:
        return f.read()


def descendants(pid: int) -> list[int]:
    found = [pid]
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                for child in read_proc(f"/proc/{pid}/task/{task}/children").split():
                    found += descendants(int(child))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and all its descendants."""
    ticks = 0
    for p in descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = read_proc(f"/proc/{p}/stat").rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / TICK


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB, summed over ``pid`` and its descendants."""
    rss = pss = 0
    for p in descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in read_proc(f"/proc/{p}/smaps_rollup").splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[str]
    log: IO[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def line(self, timeout: float = 60) -> str:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.popen.stdout.readline()
            if text:
                return text.strip()
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} said nothing (see {self.log.name})")

    def stop(self) -> None:
        # Each process of the tree by its pid (websockify forks one per connection).
        tree = descendants(self.pid)
        for pid in reversed(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.log.close()


@dataclass
class Lab:
    """The processes of one benchmark run, stopped together."""

    dir: Path
    processes: list[Process] = field(default_factory=list)

    def start(
        self, name: str, argv: list[str], *, ready_line: str | None = "ready", port: int = 0
    ) -> Process:
        log = open(self.dir / f"{name}.log", "w")  # noqa: SIM115 -- closed by Process.stop
        popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, bufsize=1
        )
        process = Process(name, popen, log)
        self.processes.append(process)
        if ready_line is not None:
            said = process.line()
            if said != ready_line:
                raise RuntimeError(f"{name}: expected {ready_line!r}, got {said!r}")
        if port:
            wait_for_port(port)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
