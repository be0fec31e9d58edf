"""Disk images already on a hypervisor: what ``qemu-img info`` says they are, and where they really lie.

An image the dashboard did not make is judged by its content, never by its name:
``qemu-img info --output=json`` reads its format, sizes, backing file and external
data file. Only the image itself is probed; a backing file is read with the format
its child records (``-f``), as libvirt does, since a probed format is how a guest
that wrote a qcow2 header into a raw disk could make QEMU open a host file.

Paths are confined to the hypervisor's directories before any command sees them,
and :meth:`ImageOperations.real_paths` says where they lead once symbolic links
are followed (a link inside the images directory may point anywhere).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.hyper.commands import CommandRunner
from app.hyper.disks import DiskFile
from app.hyper.errors import CommandError, HypervisorError
from app.hyper.paths import confine
from app.i18n import gettext as _

_SHORT = 120.0
# Files listed for import at most (each costs one qemu-img info).
MAX_LISTED = 200
# QEMU's message when another process holds the image open for writing.
_LOCKED = "Failed to get shared"


class ImageLocked(HypervisorError):
    """A running QEMU holds the image open for writing."""


class NotAnImage(HypervisorError):
    """qemu-img cannot read the file as a disk image (missing, unreadable, corrupt)."""


@dataclass(frozen=True)
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int
    # As QEMU resolves it (absolute), and the format the image records for it.
    backing_file: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    encrypted: bool = False

    @classmethod
    def parse(cls, path: str, data: dict[str, Any]) -> ImageInfo:
        backing = data.get("full-backing-filename") or data.get("backing-filename")
        specific = data.get("format-specific")
        details = specific.get("data") if isinstance(specific, dict) else None
        data_file = details.get("data-file") if isinstance(details, dict) else None
        return cls(
            path=path,
            format=str(data.get("format", "")),
            virtual_size=int(data.get("virtual-size") or 0),
            actual_size=int(data.get("actual-size") or 0),
            backing_file=str(backing) if backing else None,
            backing_format=str(data["backing-filename-format"])
            if data.get("backing-filename-format")
            else None,
            data_file=str(data_file) if data_file else None,
            encrypted=bool(data.get("encrypted")),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "virtual_size": self.virtual_size,
            "actual_size": self.actual_size,
            "backing_file": self.backing_file,
        }


@dataclass(frozen=True)
class ListedImage:
    file: DiskFile
    # None when qemu-img could not read it.
    info: ImageInfo | None


class ImageOperations:
    """Image inspection confined to one hypervisor's images, volatile and ISO directories."""

    def __init__(self, runner: CommandRunner, dirs: tuple[str, str, str]) -> None:
        self._runner = runner
        self._dirs = dirs

    def confine(self, path: str) -> str:
        return confine(path, self._dirs)

    async def info(self, path: str, *, image_format: str | None = None, shared: bool = False) -> ImageInfo:
        """``qemu-img info`` of ``path``: probed unless ``image_format`` is given.

        ``shared=False`` takes QEMU's image lock like any reader, so an image a running
        QEMU writes raises :class:`ImageLocked`; ``shared=True`` reads it regardless.
        """
        argv = ["qemu-img", "info", "--output=json"]
        if image_format is not None:
            argv += ["-f", image_format]
        if shared:
            argv.append("-U")
        result = await self._runner.run([*argv, "--", self.confine(path)], timeout=_SHORT, check=False)
        if result.exit_status != 0:
            if _LOCKED in result.stderr:
                raise ImageLocked(f"{path} is open for writing by a running QEMU")
            raise NotAnImage(f"qemu-img cannot read {path}: {_last_line(result.stderr)}")
        return ImageInfo.parse(path, _json_object(result.stdout, path))

    async def real_paths(self, paths: Sequence[str], *, must_exist: bool = True) -> list[str]:
        """Where each path leads once every symbolic link is followed (``realpath``)."""
        if not paths:
            return []
        argv = ["realpath", "-e" if must_exist else "-m", "--", *(self.confine_or_root(p) for p in paths)]
        result = await self._runner.run(argv, timeout=_SHORT, check=False)
        if result.exit_status != 0:
            raise NotAnImage(f"{_last_line(result.stderr) or 'no such file'}")
        lines = result.stdout.splitlines()
        if len(lines) != len(paths):
            raise HypervisorError(
                _("unexpected realpath output: {strip!r}").format(strip=result.stdout.strip())
            )
        return lines

    def confine_or_root(self, path: str) -> str:
        """``path`` if confined, or one of the directories themselves."""
        return confine(path, self._dirs, allow_root=True)

    async def is_regular_file(self, path: str) -> bool:
        result = await self._runner.run(["test", "-f", self.confine(path)], timeout=_SHORT, check=False)
        if result.exit_status not in (0, 1):
            raise CommandError(result.argv, result.exit_status, result.stderr)
        return result.exit_status == 0

    async def list_images(self, directory: str, *, skip: Sequence[str] = ()) -> list[ListedImage]:
        """Regular files under ``directory`` with what qemu-img says of each (read shared).

        Hidden files (temporary ones are) and the directories named in ``skip`` (a
        TPM's state) are left out; at most :data:`MAX_LISTED` files, sorted by path.
        """
        root = confine(directory, self._dirs, allow_root=True)
        prune: list[str] = []
        for name in skip:
            prune += ["-path", name, "-prune", "-o"]
        find = [
            "find", root, "-mindepth", "1", "-xdev", *prune, "-name", ".*", "-prune", "-o",
            "-type", "f", "-printf", "%s\\t%p\\0",
        ]  # fmt: skip
        listing = await self._runner.run(find, timeout=_SHORT, check=False)
        if listing.exit_status != 0 and not listing.stdout:
            raise CommandError(listing.argv, listing.exit_status, listing.stderr)
        files: list[DiskFile] = []
        for entry in listing.stdout.split("\0"):
            size, _tab, path = entry.partition("\t")
            if path and size.isdigit() and path != root:
                files.append(DiskFile(path=path, size=int(size)))
        files = sorted(files, key=lambda f: f.path)[:MAX_LISTED]
        if not files:
            return []
        # One command for all: a round trip costs more than qemu-img info itself.
        probe = (
            'for f do printf "%s\\0" "$f"; '
            'qemu-img info --output=json -U -- "$f" 2>/dev/null; printf "\\0"; done'
        )
        result = await self._runner.run(
            ["sh", "-c", probe, "sh", *(self.confine(f.path) for f in files)], timeout=_SHORT, check=False
        )
        parts = result.stdout.split("\0")
        infos: dict[str, ImageInfo] = {}
        for path, text in zip(parts[0::2], parts[1::2], strict=False):
            try:
                infos[path] = ImageInfo.parse(path, _json_object(text, path))
            except HypervisorError:
                continue
        return [ListedImage(file, infos.get(file.path)) for file in files]


def _json_object(text: str, path: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise NotAnImage(f"qemu-img gave no readable description of {path}") from None
    if not isinstance(data, dict):
        raise NotAnImage(f"qemu-img gave no readable description of {path}")
    return data


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
