"""Process helpers shared by the services: spawn tagged children, wait for
readiness with the log tail in the error, stop by PID, find stray processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tests.waiting import NeverHappened, eventually_blocking

# Every process a run starts gets this variable (value: the run id). Children
# inherit it, so /proc/PID/environ names the owning run even after a daemon forked.
RUN_TAG_VAR = "KVMVDI_TEST_RUN"


class ServiceError(RuntimeError):
    """A service did not start or stop; the message carries the log tail."""


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return f"--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail)


def spawn(
    argv: Sequence[str],
    *,
    run_id: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a long-running program with stdout+stderr appended to ``log_path``.

    The child gets its own session so that a Ctrl-C in the terminal reaches pytest
    only; pytest's teardown then stops the services in order.
    """
    child_env = dict(os.environ if env is None else env)
    child_env[RUN_TAG_VAR] = run_id
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )


def run(
    argv: Sequence[str],
    *,
    input: bytes | str | None = None,
    timeout: float = 60,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command, capturing text output; a failure names the command and its output."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        list(argv),
        input=data,
        capture_output=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )
    result = subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )
    if check and proc.returncode != 0:
        raise ServiceError(
            f"command failed with exit code {proc.returncode}: {' '.join(map(str, argv))}\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
        )
    return result


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log_path: Path | None = None,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.02,
) -> None:
    """Poll ``ready`` until it returns True; fail early if ``proc`` exits.

    Exceptions from ``ready`` count as "not yet" (connection refused and the like).
    """
    last_error: BaseException | None = None

    def started() -> bool:
        nonlocal last_error
        try:
            if ready():
                return True
        except Exception as exc:  # not ready yet: keep the reason for the error message
            last_error = exc
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{what}: process exited with code {proc.returncode} before it was ready\n"
                + log_tail(log_path)
            )
        return False

    try:
        eventually_blocking(started, what, timeout=timeout, interval=interval)
    except NeverHappened:
        reason = f" (last error: {last_error!r})" if last_error else ""
        raise ServiceError(f"{what}: not ready after {timeout:.0f} s{reason}\n{log_tail(log_path)}") from None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie.

    Zombies count as gone: a daemon that forked away is reaped by PID 1 only every
    couple of seconds on these machines, but it no longer holds ports or files.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3]
    return state not in (b"Z", b"X")


def kill_pid(pid: int, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL. Never raises for a gone PID."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    with contextlib.suppress(NeverHappened):
        eventually_blocking(lambda: not pid_alive(pid), f"pid {pid} gone", timeout=timeout)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(NeverHappened):
            eventually_blocking(lambda: not pid_alive(pid), f"pid {pid} gone after SIGKILL", timeout=5)


def stop_process(
    proc: subprocess.Popen[bytes] | None, *, timeout: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Stop a child started with :func:`spawn` and reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def tagged_pids(run_id: str) -> list[int]:
    """Live processes whose environment carries this run's tag."""
    marker = f"{RUN_TAG_VAR}={run_id}".encode()
    found = []
    me = os.getpid()
    for pid in _all_pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if marker in environ and pid_alive(pid):
            found.append(pid)
    return found


def namespace_inode(pid: int | str, kind: str) -> int | None:
    """Inode of ``/proc/PID/ns/KIND`` ("mnt", "net"), or None if the process is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def pids_in_namespace(kind: str, inode: int) -> list[int]:
    """Live processes inside the namespace with this inode."""
    me = os.getpid()
    return [
        pid for pid in _all_pids() if pid != me and namespace_inode(pid, kind) == inode and pid_alive(pid)
    ]


def pids_mounting(path: Path) -> list[int]:
    """Live processes whose mount table has a bind mount from inside ``path``.

    That identifies everything running in a hypervisor's private mount namespace,
    including qemu, which libvirt moves into a mount namespace of its own (a child
    of libvirtd's, so it still shows the bind mounts), and which carries neither the
    run tag in its environment nor our namespace's inode.
    """
    prefix = str(path).rstrip("/")
    me = os.getpid()
    verdict: dict[int | None, bool] = {}  # per mount namespace: read each table once
    found = []
    for pid in _all_pids():
        if pid == me:
            continue
        ns = namespace_inode(pid, "mnt")
        if ns not in verdict:
            try:
                lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            except OSError:
                continue
            # field 4 is the root of the mount inside its filesystem: the bind source
            roots = (line.split(" ")[3] for line in lines)
            verdict[ns] = any(r == prefix or r.startswith(prefix + "/") for r in roots)
        if verdict[ns] and pid_alive(pid):
            found.append(pid)
    return found


def descendants(root: int) -> list[int]:
    """PIDs of all live descendants of ``root`` (children first found, any depth)."""
    parents: dict[int, int] = {}
    for pid in _all_pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        parents[pid] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return [pid for pid in found if pid_alive(pid)]


def describe_pids(pids: Sequence[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        out.append(f"{pid} {cmd.strip()}")
    return "; ".join(out)
