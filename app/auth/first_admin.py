"""The first administrator's generated password: to a file only its owner can read, never to a log.

Under systemd the dashboard's standard output is the journal, which many people
may read and which keeps everything; the password therefore goes to
``data_dir/first-admin-password`` (mode 0600, written whole or not at all) and,
only when standard output is a terminal (``make run``), onto that terminal too.
The file is removed once that administrator has chosen a password of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from app.settings import Settings

log = logging.getLogger("kvmvdi")

FILE_NAME = "first-admin-password"


def first_admin_password_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def write_first_admin_password(data_dir: Path, username: str, password: str) -> Path:
    """``user name`` and ``password`` on two lines, in a file created 0600 (replacing an old one)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = first_admin_password_path(data_dir)
    partial = path.with_name(path.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{username}\n{password}\n")
    partial.rename(path)
    return path


def forget_first_admin_password(data_dir: Path, username: str) -> None:
    """Remove the file once ``username`` (the administrator it names) has a password of their own."""
    path = first_admin_password_path(data_dir)
    with contextlib.suppress(FileNotFoundError, IndexError):
        if path.read_text().splitlines()[0] == username:
            path.unlink()


def dashboard_url(settings: Settings) -> str:
    scheme = "https" if settings.server.https else "http"
    # Listening on every interface: this machine's loopback address works for a first look.
    host = "127.0.0.1" if settings.server.host in ("", "0.0.0.0", "::") else settings.server.host  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.server.port}/"


def announce_first_admin(
    settings: Settings, username: str, password: str, terminal: TextIO | None = None
) -> Path:
    """Keep the password in its file; show it on the terminal if there is one. The file's path."""
    path = write_first_admin_password(settings.data_dir, username, password)
    out = terminal if terminal is not None else sys.stdout
    if out.isatty():
        line = "=" * 64
        out.write(
            f"\n{line}\n  KVM-VDI dashboard: {dashboard_url(settings)}\n  First administrator: {username}\n"
            f"  Password (shown once, change it at first log-in): {password}\n"
            f"  (also in {path}, readable by this account only, until it is changed)\n{line}\n"
        )
        out.flush()
    # The log says where, never what.
    log.warning(
        "first administrator %r created; its one-time password is in %s (mode 0600), to change at log-in",
        username,
        path,
    )
    return path
