"""A real Prometheus server (Debian's ``prometheus``) for the metrics tests, started once per session.

Targets come from a file (``file_sd_configs``) that :meth:`Prometheus.scrape` rewrites, so each test
points the server at its own dashboard without a restart; every target is scraped each second with
the bearer token :attr:`Prometheus.token`. Prometheus applies new targets on a five-second tick,
so the first sample of a new target is queryable after about six seconds: :meth:`wait_for` waits
for a condition on a query's result, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.waiting import NeverHappened, eventually_blocking

from . import report
from .ports import allocate_port, release_port
from .process import ServiceError, run, spawn, stop_process, wait_until
from .rundir import RunDir

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kvmvdi
    authorization:
      type: Bearer
      credentials_file: {token_file}
    file_sd_configs:
      - files: ["{targets_file}"]
        refresh_interval: 1s
"""


class Prometheus:
    def __init__(self, run_dir: RunDir, name: str = "prometheus") -> None:
        self.run_dir = run_dir
        self.dir: Path = run_dir.path / name
        self.name = name
        self.port = 0
        self.token = "prom-" + secrets.token_urlsafe(24)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "prometheus.log"

    def start(self) -> Prometheus:
        started = time.monotonic()
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        token_file = self.dir / "token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        self._write_targets([])
        config = self.dir / "prometheus.yml"
        config.write_text(CONFIG.format(token_file=token_file, targets_file=self.dir / "targets.json"))
        run(["promtool", "check", "config", str(config)], timeout=60)
        self.port = allocate_port()
        self._proc = spawn(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            run_id=self.run_dir.id,
            log_path=self.log_path,
        )
        wait_until(self._ready, what="prometheus", timeout=60, log_path=self.log_path, proc=self._proc)
        report.note(self.name, f"started Prometheus on 127.0.0.1:{self.port}", time.monotonic() - started)
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)

    def _write_targets(self, targets: list[str], labels: dict[str, str] | None = None) -> None:
        path = self.dir / "targets.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets, "labels": labels or {}}] if targets else []))
        os.replace(tmp, path)

    def scrape(self, address: str, **labels: str) -> None:
        """Scrape ``host:port`` (``/metrics``, with the token) from now on, instead of any other target."""
        self._write_targets([address], labels)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:  # noqa: S310
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise ServiceError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: ``[{"metric": {...}, "value": [time, "text"]}]``."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str, label: str) -> dict[str, float]:
        """The query's series by the value of ``label``."""
        return {item["metric"].get(label, ""): float(item["value"][1]) for item in self.query(expr)}

    def wait_for(
        self, expr: str, ready: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 60
    ) -> Any:
        """Query until ``ready(result)``; the last result (an error with it on timeout)."""
        last: list[dict[str, Any]] = []

        def answered() -> list[dict[str, Any]] | None:
            nonlocal last
            last = self.query(expr)
            return last if ready(last) else None

        try:
            return eventually_blocking(answered, f"prometheus: {expr}", timeout=timeout, interval=0.25)
        except NeverHappened:
            raise AssertionError(
                f"prometheus: {expr} never satisfied the condition; last result {last}"
            ) from None

    def stop(self) -> None:
        stop_process(self._proc, timeout=15)
        self._proc = None
        if self.port:
            release_port(self.port)
            self.port = 0
