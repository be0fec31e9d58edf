"""A machine-wide cache of slow-to-make, read-only service state (a freshly
initialised MariaDB data dir, libvirt's qemu capability cache).

Entries are keyed by the version of the program that made them, written to a
temporary name and renamed into place, so concurrent runs never see half an entry.
Delete the directory at any time; the next run rebuilds what it needs.
``KVMVDI_TEST_CACHE`` moves it (default ``/var/tmp/kvmvdi-test-cache``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path


def cache_dir() -> Path:
    path = Path(os.environ.get("KVMVDI_TEST_CACHE", "/var/tmp/kvmvdi-test-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def entry(name: str, version: str) -> Path:
    """Path of a cache entry (may not exist yet)."""
    return cache_dir() / f"{name}-{re.sub(r'[^A-Za-z0-9._-]+', '_', version)}"


def store(source: Path, target: Path) -> None:
    """Copy the directory ``source`` to the cache entry ``target`` atomically (keeps owners)."""
    if target.exists():
        return
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", str(source), str(tmp)], check=True, capture_output=True)
    try:
        tmp.rename(target)
    except OSError:  # another run stored the same entry first
        shutil.rmtree(tmp, ignore_errors=True)


def restore(source: Path, target: Path) -> bool:
    """Copy a cache entry to ``target`` (which must not exist); False if there is no entry."""
    if not source.is_dir():
        return False
    subprocess.run(["cp", "-a", str(source), str(target)], check=True, capture_output=True)
    return True
