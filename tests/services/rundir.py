"""The private run directory of one test session, and the reaper of crashed runs.

``/tmp/kvmvdi-test-<id>`` with mode 0755: libvirt's qemu (user libvirt-qemu),
mariadbd (mysql) and the SSH test user must all traverse it, which rules out
pytest's 0700 tmp dirs. The id names everything the run creates (network
namespaces, veths, processes via their environment), so two runs on one machine,
e.g. from two worktrees, never collide. The directory is removed at the end
unless ``KVMVDI_KEEP_RUN_DIR=1``.

``resources.json`` in the directory is a ledger of what lives outside it (network
namespaces, veth links); :func:`reap_stale_runs` uses it, the run tag in process
environments and the bind mounts of the hypervisors' mount namespaces to clean up
after a run that was killed before its teardown could run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from .process import describe_pids, pid_alive, pids_mounting, tagged_pids

RUN_DIR_PREFIX = "kvmvdi-test-"
RUN_DIR_BASE = Path("/tmp")


class RunDir:
    def __init__(self, base: Path = RUN_DIR_BASE) -> None:
        while True:
            run_id = secrets.token_hex(3)
            path = base / f"{RUN_DIR_PREFIX}{run_id}"
            try:
                path.mkdir(mode=0o755)
                break
            except FileExistsError:
                continue
        os.chmod(path, 0o755)  # noqa: S103 - service users must traverse it; mkdir honours the umask
        self.id: str = run_id
        self.path: Path = path
        self._lock = threading.Lock()
        self._ledger: dict[str, Any] = {
            "owner_pid": os.getpid(),
            "owner_start": _start_time(os.getpid()),
            "netns": [],
            "links": [],
        }
        self._save()

    def __repr__(self) -> str:
        return f"RunDir({self.path})"

    def sub(self, *parts: str, mode: int = 0o755) -> Path:
        """A directory inside the run dir (created, with ``mode``)."""
        path = self.path.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        return path

    # --- ledger of resources outside the directory -------------------------------------------
    def record(self, kind: str, value: Any) -> None:
        with self._lock:
            entries = self._ledger.setdefault(kind, [])
            if value not in entries:
                entries.append(value)
            self._save()

    def forget(self, kind: str, value: Any) -> None:
        with self._lock:
            entries = self._ledger.get(kind, [])
            if value in entries:
                entries.remove(value)
            self._save()

    def _save(self) -> None:
        tmp = self.path / "resources.json.tmp"
        tmp.write_text(json.dumps(self._ledger))
        tmp.replace(self.path / "resources.json")

    # --- end of the run -----------------------------------------------------------------------
    def leftovers(self) -> list[str]:
        """What this run still has running or configured (should be empty after teardown)."""
        found = []
        pids = tagged_pids(self.id)
        if pids:
            found.append(f"processes: {describe_pids(pids)}")
        for ns in self._ledger["netns"]:
            if Path("/run/netns", ns).exists():
                found.append(f"network namespace {ns}")
        for link in self._ledger["links"]:
            if Path("/sys/class/net", link).exists():
                found.append(f"link {link}")
        pids = pids_mounting(self.path)
        if pids:
            found.append(f"processes in private mount namespaces: {describe_pids(pids)}")
        return found

    def cleanup(self, keep: bool | None = None) -> None:
        """Kill whatever is left, delete namespaces and links, remove the directory."""
        _reap(self.path, self.id, self._ledger)
        if keep is None:
            keep = os.environ.get("KVMVDI_KEEP_RUN_DIR") == "1"
        if not keep:
            shutil.rmtree(self.path, ignore_errors=True)


def _start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot: tells a PID from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _reap(path: Path, run_id: str, ledger: dict[str, Any]) -> None:
    # Hypervisor daemons and their qemus: everything that sees a bind mount from the run dir.
    for pid in pids_mounting(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in tagged_pids(run_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for link in ledger.get("links", []):
        if Path("/sys/class/net", link).exists():
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    for ns in ledger.get("netns", []):
        if Path("/run/netns", ns).exists():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def reap_stale_runs(base: Path = RUN_DIR_BASE) -> list[str]:
    """Clean up run dirs whose owning process is gone (a run killed with SIGKILL).

    Returns the ids of the runs it cleaned up.
    """
    reaped = []
    for path in base.glob(f"{RUN_DIR_PREFIX}*"):
        if path.name == "kvmvdi-test-ports":
            continue
        try:
            ledger = json.loads((path / "resources.json").read_text())
        except (OSError, ValueError):
            continue
        owner = ledger.get("owner_pid")
        if isinstance(owner, int) and pid_alive(owner) and _start_time(owner) == ledger.get("owner_start"):
            continue
        run_id = path.name.removeprefix(RUN_DIR_PREFIX)
        _reap(path, run_id, ledger)
        if os.environ.get("KVMVDI_KEEP_RUN_DIR") != "1":
            shutil.rmtree(path, ignore_errors=True)
        else:
            # keep the files for inspection, but never reap twice
            (path / "resources.json").unlink(missing_ok=True)
        reaped.append(run_id)
    return reaped
