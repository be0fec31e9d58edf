"""Free TCP ports on 127.0.0.1 that no other test run on this machine can take.

Binding to port 0 alone is racy between two runs (one checks, the other binds).
Each port handed out here is also claimed with an exclusive ``flock`` on a file in
a machine-wide directory; the lock lives as long as this process holds the file
descriptor, so a crashed run frees its ports automatically. Ports come from a
range below the kernel's ephemeral range, so outgoing connections never take them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
from pathlib import Path

LOCK_DIR = Path("/tmp/kvmvdi-test-ports")
PORT_MIN = 20000
PORT_MAX = 32000  # the ephemeral range starts at 32768 on Linux

_held: dict[int, int] = {}  # port -> fd of its lock file


def _lock_dir() -> Path:
    LOCK_DIR.mkdir(mode=0o1777, exist_ok=True)
    return LOCK_DIR


def _can_bind(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _lock_file(port: int) -> int | None:
    path = _lock_dir() / f"{port}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        # Left by another user's run (root's, say): a read-only descriptor locks it just as well.
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)  # the umask narrowed it; runs of every user share these files
    return fd


def _claim(port: int, host: str) -> bool:
    if port in _held:
        return False
    fd = _lock_file(port)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    # Someone outside the harness may use the port: also check that it is free now,
    # on the wildcard address too (a daemon bound to 0.0.0.0 blocks 127.0.0.1).
    if not (_can_bind(port, host) and _can_bind(port, "0.0.0.0")):  # noqa: S104 - probe only
        os.close(fd)
        return False
    _held[port] = fd
    return True


def allocate_port(host: str = "127.0.0.1") -> int:
    """One free port, held until :func:`release_port` or the end of this process."""
    return allocate_port_block(1, host)


def allocate_port_block(count: int, host: str = "127.0.0.1") -> int:
    """``count`` consecutive free ports; returns the first one."""
    candidates = list(range(PORT_MIN, PORT_MAX - count + 1, max(count, 1)))
    random.shuffle(candidates)
    for first in candidates:
        claimed: list[int] = []
        for port in range(first, first + count):
            if not _claim(port, host):
                break
            claimed.append(port)
        if len(claimed) == count:
            return first
        for port in claimed:
            release_port(port)
    raise RuntimeError(f"no block of {count} free ports in {PORT_MIN}-{PORT_MAX}")


def release_port(port: int, count: int = 1) -> None:
    for p in range(port, port + count):
        fd = _held.pop(p, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
