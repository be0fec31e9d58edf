"""A virtual X server (Xvfb) for the thin client and remote-viewer tests.

The display number is chosen by Xvfb itself (``-displayfd``): it takes the first
free one and holds its lock file in /tmp, so concurrent runs never share a display.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

from . import report
from .process import ServiceError, log_tail, run, spawn, stop_process
from .rundir import RunDir


class Xvfb:
    def __init__(self, run_dir: RunDir, name: str = "xvfb", *, width: int = 1280, height: int = 800) -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self.width = width
        self.height = height
        self.display = ""  # ":N"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for X clients: this display, no accessibility bus (there is no dbus)."""
        return {**os.environ, "DISPLAY": self.display, "NO_AT_BRIDGE": "1"}

    def start(self) -> Xvfb:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        try:
            self._proc = spawn(
                [
                    "Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
                    "-nolisten", "tcp", "-noreset",
                ],
                run_id=self.run_dir.id,
                log_path=self.dir / "xvfb.log",
                pass_fds=[write_fd],
            )  # fmt: skip
            os.close(write_fd)
            write_fd = -1
            # Xvfb writes the display number once it accepts clients; EOF means it died.
            number = b""
            deadline = time.monotonic() + 30
            while not number.endswith(b"\n"):
                if time.monotonic() > deadline:
                    raise ServiceError(f"Xvfb gave no display number\n{log_tail(self.dir / 'xvfb.log')}")
                chunk = os.read(read_fd, 16)
                if not chunk:
                    raise ServiceError(f"Xvfb exited\n{log_tail(self.dir / 'xvfb.log')}")
                number += chunk
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        self.display = f":{int(number)}"
        report.note(
            self.name, f"started Xvfb on display {self.display} ({self.width}x{self.height})",
            time.monotonic() - started,
        )  # fmt: skip
        return self

    def screenshot(self, path: Path) -> Path:
        """Capture the whole screen to ``path`` (format from its suffix, e.g. .png) with ImageMagick."""
        run(["import", "-display", self.display, "-window", "root", str(path)], env=self.env, timeout=30)
        return path

    def stop(self) -> None:
        stop_process(self._proc, timeout=10)
        self._proc = None

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
