"""Running the ``kvm-vdi`` command as a real subprocess, with a chosen database and data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.dashboard import REPO


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMVDI_")}
    env.update(
        KVMVDI_DATABASE_URL=database_url,
        KVMVDI_DATA_DIR=str(data_dir),
        KVMVDI_ASSETS_DIR=str(REPO / "node_modules"),
        **extra,
    )
    return env


def kvm_vdi(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
