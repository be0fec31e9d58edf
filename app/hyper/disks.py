"""Disk files on a hypervisor: overlays, copies with progress, listing and free space.

Nothing is left half-written under a final name: new files are written to a
temporary name in the same directory and renamed into place at the end; the
temporary file is removed when the command fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.hyper.commands import CommandRunner
from app.hyper.errors import CommandError, DirectoryMissing, HypervisorError
from app.hyper.paths import confine
from app.i18n import gettext as _

log = logging.getLogger("kvmvdi.hyper.disks")

ProgressCallback = Callable[[float], Awaitable[None] | None]

# qemu-img convert -p prints "    (42.17/100%)" followed by "\r".
_PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")
_OP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Copying a disk can take hours; no overall timeout, only cancellation.
_SHORT = 120.0


@dataclass(frozen=True)
class DiskFile:
    path: str
    size: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class ProgressParser:
    """Feeds percentages from qemu-img's progress output, rising only, to a callback."""

    def __init__(self, report: Callable[[float], None]) -> None:
        self._report = report
        self._tail = ""
        self.last = -1.0

    def feed(self, text: str) -> None:
        self._tail = (self._tail + text)[-256:]
        *complete, self._tail = re.split(r"[\r\n]", self._tail)
        for piece in complete:
            for match in _PROGRESS.finditer(piece):
                value = float(match.group(1))
                if value > self.last:
                    self.last = value
                    self._report(value)


class DiskOperations:
    """Disk commands confined to one hypervisor's images, volatile and ISO directories."""

    def __init__(self, runner: CommandRunner, dirs: tuple[str, str, str]) -> None:
        self._runner = runner
        self._dirs = dirs

    @property
    def iso_dir(self) -> str:
        return self._dirs[2]

    def confine(self, path: str, *, allow_root: bool = False) -> str:
        return confine(path, self._dirs, allow_root=allow_root)

    async def create_overlay(self, base: str, path: str, *, replace: bool = False) -> None:
        """A qcow2 overlay at ``path`` backed by ``base`` (both qcow2, absolute backing path)."""
        base, path = self.confine(base), self.confine(path)
        if not replace and await self.file_exists(path):
            raise HypervisorError(_("{path} already exists").format(path=path))
        temp = partial_path(path, secrets.token_hex(6))
        try:
            await self._runner.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", temp], timeout=_SHORT
            )
            await self._runner.run(["mv", "-f", "-T", "--", temp, path], timeout=_SHORT)
        except BaseException:
            await self._discard(temp)
            raise

    async def convert_disk(
        self,
        src: str,
        dst: str,
        on_progress: ProgressCallback | None = None,
        *,
        op_id: str | None = None,
        src_format: str = "qcow2",
        replace: bool = False,
    ) -> None:
        """Copy ``src`` to a standalone qcow2 at ``dst``, reporting 0-100 % as it goes.

        Written to ``dst.part-<op_id>`` and renamed at the end. The source format is
        given, never probed: probing a guest-written raw image could make qemu-img
        follow a backing file the guest planted.
        """
        src, dst = self.confine(src), self.confine(dst)
        if src_format not in ("qcow2", "raw"):
            raise HypervisorError(_("unsupported source format {src_format!r}").format(src_format=src_format))
        op = op_id or secrets.token_hex(6)
        if not _OP_ID.match(op):
            raise HypervisorError(_("the operation id may only contain letters, digits, '-' and '_'"))
        if not replace and await self.file_exists(dst):
            raise HypervisorError(_("{dst} already exists").format(dst=dst))
        temp = partial_path(dst, op)
        reports: asyncio.Queue[float | None] = asyncio.Queue()
        parser = ProgressParser(reports.put_nowait)
        forwarder = asyncio.create_task(_forward(reports, on_progress))
        try:
            await self._runner.run(
                ["qemu-img", "convert", "-p", "-f", src_format, "-O", "qcow2", src, temp],
                on_output=parser.feed,
            )
            await self._runner.run(["mv", "-f", "-T", "--", temp, dst], timeout=_SHORT)
            if parser.last < 100:
                reports.put_nowait(100.0)
        except BaseException:
            await self._discard(temp)
            raise
        finally:
            reports.put_nowait(None)
            await forwarder

    async def create_blank(self, path: str, size_bytes: int) -> None:
        """An empty standalone qcow2 of ``size_bytes`` at ``path``, which must not exist yet."""
        path = self.confine(path)
        if await self.file_exists(path):
            raise HypervisorError(_("{path} already exists").format(path=path))
        await self._runner.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", path, str(int(size_bytes))], timeout=_SHORT
        )

    async def rename_file(self, src: str, dst: str) -> None:
        await self._runner.run(["mv", "-f", "-T", "--", self.confine(src), self.confine(dst)], timeout=_SHORT)

    async def remove_file(self, path: str) -> None:
        await self._runner.run(["rm", "-f", "--", self.confine(path)], timeout=_SHORT)

    async def file_exists(self, path: str) -> bool:
        result = await self._runner.run(["test", "-e", self.confine(path)], timeout=_SHORT, check=False)
        if result.exit_status not in (0, 1):
            raise CommandError(result.argv, result.exit_status, result.stderr)
        return result.exit_status == 0

    async def list_isos(self) -> list[DiskFile]:
        """Regular files under the ISO directory (recursively), sorted by path."""
        root = self.confine(self.iso_dir, allow_root=True)
        result = await self._runner.run(
            ["find", root, "-xdev", "-type", "f", "-printf", "%s\\t%p\\0"], timeout=_SHORT, check=False
        )
        if result.exit_status != 0 and not result.stdout:
            if "No such file or directory" in result.stderr:
                raise DirectoryMissing(
                    _("the ISO directory {path} does not exist on the hypervisor").format(path=root)
                )
            raise CommandError(result.argv, result.exit_status, result.stderr)
        files = []
        for entry in result.stdout.split("\0"):
            size, _tab, path = entry.partition("\t")
            if path and size.isdigit():
                files.append(DiskFile(path=path, size=int(size)))
        return sorted(files, key=lambda f: f.path)

    async def free_bytes(self, path: str) -> int:
        """Bytes available to the hypervisor's service user on the filesystem holding ``path``."""
        result = await self._runner.run(
            ["df", "--output=avail", "-B1", "--", self.confine(path, allow_root=True)], timeout=_SHORT
        )
        lines = result.stdout.split()
        if len(lines) < 2 or not lines[-1].isdigit():
            raise HypervisorError(_("unexpected df output: {strip!r}").format(strip=result.stdout.strip()))
        return int(lines[-1])

    async def _discard(self, temp: str) -> None:
        # Shielded: cancellation of the caller must not leave the temporary file behind.
        try:
            await asyncio.shield(self._runner.run(["rm", "-f", "--", temp], timeout=_SHORT, check=False))
        except Exception as exc:
            log.warning("could not remove the temporary file %s: %s", temp, exc)


def partial_path(path: str, tag: str) -> str:
    """Where a new file is written before it is renamed to ``path`` (``convert_disk``: tag = op_id)."""
    return f"{path}.part-{tag}"


async def _forward(reports: asyncio.Queue[float | None], on_progress: ProgressCallback | None) -> None:
    """Deliver progress to the callback in order; a failing callback never stops the copy."""
    while (value := await reports.get()) is not None:
        if on_progress is None:
            continue
        try:
            outcome = on_progress(value)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("progress callback failed")
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            reports.get_nowait()
