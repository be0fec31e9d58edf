"""``kvm-vdi serve`` as a real subprocess: the way an admin starts the dashboard."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.cli import cli_env
from tests.dashboard import REPO
from tests.services.ports import allocate_port, release_port
from tests.services.process import ServiceError, spawn, stop_process, wait_until
from tests.services.rundir import RunDir


class ServedDashboard:
    def __init__(
        self, run_dir: RunDir, workdir: Path, database_url: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.run_dir = run_dir
        self.extra_env = env or {}
        self.workdir = workdir
        self.database_url = database_url
        self.args = list(args)
        self.port = 0
        self.gateway_port = 0
        self.log_path = workdir / "serve.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServedDashboard:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = allocate_port()
        # Never the default gateway port: another test run on this machine may hold it.
        self.gateway_port = allocate_port()
        argv = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        env = {
            **cli_env(self.database_url, self.workdir / "var", KVMVDI_GATEWAY__PORT=str(self.gateway_port)),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self._proc = spawn(argv, run_id=self.run_dir.id, log_path=self.log_path, env=env, cwd=REPO)
        wait_until(self._answers, what="kvm-vdi serve", timeout=60, log_path=self.log_path, proc=self._proc)
        return self

    def _answers(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/login", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def first_admin_password(self) -> str:
        """The generated password the dashboard kept in its file on its first start."""
        path = self.workdir / "var" / "first-admin-password"
        if not path.is_file():
            raise ServiceError(f"no first-admin password in {path}")
        return path.read_text().splitlines()[1]

    def stop(self) -> None:
        stop_process(self._proc, timeout=20)
        self._proc = None
        for port in (self.port, self.gateway_port):
            if port:
                release_port(port)
        self.port = self.gateway_port = 0

    def __enter__(self) -> ServedDashboard:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
