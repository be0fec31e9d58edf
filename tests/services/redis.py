"""A private Redis server on a loopback port, without persistence (the cluster's message bus).

:meth:`RedisServer.restart` stops it and starts it again on the same port: what
the dashboard replicas see when an admin restarts Redis.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from . import report
from .ports import allocate_port, release_port
from .process import run, spawn, stop_process, wait_until
from .rundir import RunDir


class RedisServer:
    def __init__(self, run_dir: RunDir, name: str = "redis") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.host = "127.0.0.1"
        self.port = 0
        self.log_path = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = allocate_port(self.host)
        self._proc = spawn(
            [
                "redis-server",
                "--bind", self.host,
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
                "--logfile", str(self.log_path),
            ],
            run_id=self.run_dir.id,
            log_path=self.dir / "redis.out",
        )  # fmt: skip
        wait_until(self._answers, what="redis-server", timeout=30, log_path=self.log_path, proc=self._proc)
        report.note("redis", f"started redis-server on {self.host}:{self.port}", time.monotonic() - started)
        return self

    def _answers(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def cli(self, *args: str) -> str:
        return run(["redis-cli", "-h", self.host, "-p", str(self.port), *args], timeout=10).stdout

    def halt(self) -> None:
        """Stop the server but keep its port: :meth:`start` brings it back at the same address."""
        stop_process(self._proc, timeout=20)
        self._proc = None

    def restart(self) -> None:
        """Stop (everything in memory is lost) and start again on the same port."""
        stop_process(self._proc, timeout=20)
        self._proc = None
        self.start()

    def stop(self) -> None:
        stop_process(self._proc, timeout=20)
        self._proc = None
        if self.port:
            release_port(self.port)
            self.port = 0

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
