"""A new VM on a disk image that already lies in the hypervisor's images directory.

The image is judged by what ``qemu-img info`` reads in it, never by its name, and
refused when using it could reach outside the images directory: a path or a
symbolic link leading elsewhere, a backing file elsewhere (or of an unrecorded
format, which QEMU would probe), an external data file, encryption. An image a
running QEMU holds open for writing, or that is already a VM's disk, is refused
too: two machines writing one disk destroy it.

In place (the default) the VM's disk *is* the image, in its own format (qcow2 or
raw); with a copy, the image is converted to a new standalone qcow2 for the VM
and left untouched.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass

import sqlalchemy as sa

from app.db.schema import vms
from app.hyper import Hypervisor, HypervisorError
from app.hyper.images import ImageLocked, NotAnImage
from app.i18n import gettext as _
from app.vms.context import VmContext
from app.vms.errors import HypervisorFailure, Invalid
from app.vms.parameters import under_directory

FIELD = "import_path"
FORMATS = ("qcow2", "raw")
GIB = 1024**3


@dataclass(frozen=True)
class ImportedImage:
    path: str  # where the image really lies (links followed), inside the images directory
    format: str
    size_gib: int  # its virtual size, rounded up


def _refuse(message: str) -> Invalid:
    return Invalid({FIELD: message})


async def inspect_import(ctx: VmContext, hv: Hypervisor, path: str) -> ImportedImage:
    """The image at ``path`` if it may become a new VM's disk; :class:`Invalid` says why not."""
    images_dir = hv.record.images_dir
    if not under_directory(path, images_dir):
        raise _refuse(_("choose an image in {images_dir}/").format(images_dir=images_dir))
    try:
        try:
            real = (await hv.real_paths([path]))[0]
        except NotAnImage:
            raise _refuse(_("{path}: no such file").format(path=path)) from None
        if not under_directory(real, images_dir):
            raise _refuse(
                _("{path} leads outside {images_dir}/ (to {real}): import the file itself").format(
                    path=path, images_dir=images_dir, real=real
                )
            )
        if not await hv.is_regular_file(real):
            raise _refuse(_("{path} is not a regular file").format(path=path))
        info = await hv.image_info(real)
    except ImageLocked:
        raise _refuse(
            _("{path} is in use by a running machine: shut it down first").format(path=path)
        ) from None
    except NotAnImage as exc:
        raise _refuse(str(exc)) from None
    except HypervisorError as exc:
        raise HypervisorFailure(f"inspecting {path} failed: {exc}") from exc
    if info.format not in FORMATS:
        raise _refuse(
            _("{path} is a {value} image: qcow2 or raw images can be imported").format(
                path=path, value=info.format or "unknown"
            )
        )
    if info.encrypted:
        raise _refuse(_("{path} is encrypted: decrypt it first").format(path=path))
    if info.data_file:
        raise _refuse(
            _("{path} keeps its data in an external file ({data_file}): convert it first").format(
                path=path, data_file=info.data_file
            )
        )
    if info.backing_file:
        await _check_backing(hv, path, info.backing_file, info.backing_format)
    holders = await _disk_holders(ctx, {path, real})
    holder = holders.get(real) or holders.get(path)
    if holder is not None:
        raise _refuse(_("{path} is already the disk of {holder}").format(path=path, holder=holder))
    return ImportedImage(path=real, format=info.format, size_gib=max(1, math.ceil(info.virtual_size / GIB)))


async def _check_backing(hv: Hypervisor, path: str, backing: str, backing_format: str | None) -> None:
    images_dir = hv.record.images_dir
    if backing_format not in FORMATS:
        # Without a recorded format QEMU would probe the backing file: refuse, as libvirt does.
        raise _refuse(
            _("{path} does not record its backing file's format: rebase it with -F first").format(path=path)
        )
    if not under_directory(posixpath.normpath(backing), images_dir):
        raise _refuse(
            _("{path} reads from a backing file outside {images_dir}/ ({backing})").format(
                path=path, images_dir=images_dir, backing=backing
            )
        )
    try:
        real = (await hv.real_paths([backing]))[0]
    except NotAnImage:
        raise _refuse(
            _("the backing file of {path} ({backing}) does not exist").format(path=path, backing=backing)
        ) from None
    except HypervisorError as exc:
        raise HypervisorFailure(f"inspecting {backing} failed: {exc}") from exc
    if not under_directory(real, images_dir):
        raise _refuse(
            _("the backing file of {path} leads outside {images_dir}/ (to {real})").format(
                path=path, images_dir=images_dir, real=real
            )
        )


async def _disk_holders(ctx: VmContext, paths: set[str]) -> dict[str, str]:
    """The VM (name) whose disk each of ``paths`` already is, for those that are one."""
    rows = await ctx.db.fetch_all(
        sa.select(vms.c.name, vms.c.disk_path).where(vms.c.disk_path.in_(sorted(paths)))
    )
    return {str(row._mapping["disk_path"]): str(row._mapping["name"]) for row in rows}


@dataclass(frozen=True)
class ImageChoice:
    """A file of the images directory as the VM form offers it for import."""

    path: str
    size: int  # bytes on disk
    format: str | None  # None: qemu-img cannot read it
    virtual_size: int
    backing_file: str | None
    disk_of: str | None  # the VM whose disk it already is

    @property
    def importable(self) -> bool:
        return self.format in FORMATS and self.disk_of is None

    def summary(self) -> dict[str, object]:
        return {
            "path": self.path,
            "name": posixpath.basename(self.path),
            "size": self.size,
            "format": self.format,
            "virtual_size": self.virtual_size,
            "backing_file": self.backing_file,
            "disk_of": self.disk_of,
            "importable": self.importable,
        }


async def image_choices(ctx: VmContext, hv: Hypervisor) -> list[ImageChoice]:
    """The images directory's files (UEFI variable stores and TPM states left out), each with what
    qemu-img reads in it and the VM whose disk it already is."""
    try:
        listed = await hv.list_images()
    except HypervisorError as exc:
        raise HypervisorFailure(_("listing the hypervisor's images failed: {exc}").format(exc=exc)) from exc
    listed = [item for item in listed if not item.file.path.endswith(".VARS.fd")]
    holders = await _disk_holders(ctx, {item.file.path for item in listed})
    return [
        ImageChoice(
            path=item.file.path,
            size=item.file.size,
            format=item.info.format if item.info else None,
            virtual_size=item.info.virtual_size if item.info else 0,
            backing_file=item.info.backing_file if item.info else None,
            disk_of=holders.get(item.file.path),
        )
        for item in listed
    ]
