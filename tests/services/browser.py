"""Headless Chromium driven by Selenium, from Debian's chromium + chromium-driver.

:class:`BrowserFactory` makes drivers (each with a profile in the run dir) and
quits all of them at the end. No selenium-manager download happens: the binary
and driver paths are given explicitly.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from . import report
from .process import RUN_TAG_VAR
from .rundir import RunDir

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # root, and no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--password-store=basic",
]


class BrowserFactory:
    def __init__(self, run_dir: RunDir, name: str = "browser") -> None:
        self.run_dir = run_dir
        self.name = name
        self.dir: Path = run_dir.path / name
        self._drivers: list[webdriver.Chrome] = []
        self._count = 0

    def new(
        self, *, width: int = 1280, height: int = 800, extra_args: list[str] | None = None
    ) -> webdriver.Chrome:
        """A fresh headless Chromium with an empty profile; console logs are recorded."""
        started = time.monotonic()
        self._count += 1
        profile = self.dir / f"profile-{self._count}"
        profile.mkdir(parents=True, exist_ok=True)
        options = Options()
        options.binary_location = CHROMIUM
        for flag in [
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            *(extra_args or []),
        ]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(
            CHROMEDRIVER,
            log_output=str(self.dir / f"chromedriver-{self._count}.log"),
            # the run tag reaches chromium too, so teardown finds stray renderer processes
            env={**os.environ, RUN_TAG_VAR: self.run_dir.id},
        )
        driver = webdriver.Chrome(options=options, service=service)
        self._drivers.append(driver)
        if self._count == 1:
            version = driver.capabilities.get("browserVersion", "?")
            report.note(self.name, f"started headless Chromium {version}", time.monotonic() - started)
        return driver

    @contextlib.contextmanager
    def session(self, **kwargs: Any) -> Iterator[webdriver.Chrome]:
        """``with browser.session() as driver:`` quits the driver afterwards."""
        driver = self.new(**kwargs)
        try:
            yield driver
        finally:
            self.quit(driver)

    def quit(self, driver: webdriver.Chrome) -> None:
        with contextlib.suppress(Exception):
            driver.quit()
        if driver in self._drivers:
            self._drivers.remove(driver)

    def close(self) -> None:
        for driver in list(self._drivers):
            self.quit(driver)


def console_logs(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Browser console entries since the last call: ``{"level", "message", "timestamp", "source"}``."""
    return list(driver.get_log("browser"))
