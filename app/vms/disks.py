"""Disk work on a hypervisor: new disks, qcow2 overlays, renames, removals.

Several files are handled in one SSH command (a ``sh -c`` script made of
``shlex.join``-ed argument vectors, never of raw input), because a round trip
costs far more than ``qemu-img create`` itself (about 10 ms). Every path is
confined to the hypervisor's own directories first. Every new file is written
under a temporary name and renamed into place, so a crash leaves no half-made
disk under the real name.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Sequence
from typing import Any

from app.hyper import CommandError, Hypervisor, HypervisorError, PathNotAllowed
from app.i18n import gettext as _
from app.vms.errors import HypervisorFailure, Refused

PART = ".part"
NO_SPACE = "No space left on device"


def script(commands: Sequence[Sequence[str]], *, temporary: Sequence[str] = ()) -> list[str]:
    """One ``sh -c`` argument vector running ``commands`` in order, stopping at the first failure;
    the ``temporary`` files are removed whatever happens (those renamed into place are gone already)."""
    lines = ["set -e"]
    if temporary:
        lines.append(shlex.join(["trap", shlex.join(["rm", "-f", "--", *temporary]), "EXIT"]))
    body = "\n".join([*lines, *(shlex.join(list(command)) for command in commands)])
    return ["sh", "-c", body]


def part_path(path: str) -> str:
    """The temporary name a file is written under before it is renamed into ``path``."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}{PART}")


def confined(hv: Hypervisor, paths: Sequence[str]) -> list[str]:
    """``paths`` if each lies inside the hypervisor's images, volatile or ISO directory."""
    try:
        return [hv.confine(path) for path in paths]
    except PathNotAllowed as exc:
        raise Refused(
            _("{exc}: keep disks inside the hypervisor's directories").format(exc=exc),
            code="path_not_allowed",
        ) from None


async def run_script(
    hv: Hypervisor,
    commands: Sequence[Sequence[str]],
    *,
    what: str,
    temporary: Sequence[str] = (),
    space_in: str | None = None,
) -> str:
    """Run ``commands`` as one script; ``space_in``: the directory a "no space" failure is about."""
    if not commands:
        return ""
    try:
        result = await hv.run(script(commands, temporary=temporary))
    except HypervisorError as exc:
        if space_in is not None and (full := await no_space(hv, exc, space_in, what)) is not None:
            raise full from exc
        raise HypervisorFailure(f"{what} failed: {_reason(exc)}") from exc
    return result.stdout


def _reason(exc: HypervisorError) -> str:
    if isinstance(exc, CommandError) and exc.stderr.strip():
        return exc.stderr.strip().splitlines()[-1]
    return str(exc) or type(exc).__name__


async def no_space(
    hv: Hypervisor, exc: HypervisorError, directory: str, what: str
) -> HypervisorFailure | None:
    """A clear failure when ``exc`` is the filesystem of ``directory`` running full, else None."""
    text = f"{exc} {exc.stderr if isinstance(exc, CommandError) else ''}"
    if NO_SPACE not in text:
        return None
    try:
        left = _("{free:.0f} MiB are free there now").format(free=await hv.free_bytes(directory) / 2**20)
    except HypervisorError:
        left = _("how much is free there could not be read")
    return HypervisorFailure(
        _(
            "No space left on {directory} of hypervisor {hypervisor}: {what} ran out of room ({left}). "
            "Free some space there, then try again."
        ).format(directory=directory, hypervisor=hv.name, what=what, left=left),
        code="no_space",
    )


async def create_disks(hv: Hypervisor, disks: Sequence[tuple[str, int]]) -> None:
    """New empty qcow2 disks ``(path, size_gib)``; refuses to replace an existing file."""
    paths = confined(hv, [path for path, _size in disks])
    commands: list[list[str]] = []
    for path, (_path, size_gib) in zip(paths, disks, strict=True):
        temp = part_path(path)
        commands += [
            ["mkdir", "-p", posixpath.dirname(path)],
            ["test", "!", "-e", path],
            ["rm", "-f", temp],
            ["qemu-img", "create", "-q", "-f", "qcow2", temp, f"{size_gib}G"],
            ["mv", "-f", temp, path],
        ]
    existing = await existing_files(hv, paths)
    if existing:
        which = ", ".join(existing)
        raise Refused(
            _("a file already exists at {which}: choose another name or remove it first").format(which=which)
        )
    temps = [part_path(path) for path in paths]
    where = posixpath.dirname(paths[0]) if paths else None
    await run_script(hv, commands, what="creating the disk", temporary=temps, space_in=where)


async def create_overlays(
    hv: Hypervisor, base: str, paths: Sequence[str], *, base_format: str = "qcow2"
) -> None:
    """(Re)create qcow2 overlays backed by ``base`` (of ``base_format``, recorded in each overlay so
    it is never probed): whatever was in them is discarded."""
    base, *targets = confined(hv, [base, *paths])
    commands: list[list[str]] = []
    for parent in sorted({posixpath.dirname(path) for path in targets}):
        commands.append(["mkdir", "-p", parent])
    for path in targets:
        temp = part_path(path)
        commands += [
            ["rm", "-f", temp],
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", base_format, temp],
            ["mv", "-f", temp, path],
        ]
    temps = [part_path(path) for path in targets]
    where = posixpath.dirname(targets[0]) if targets else None
    await run_script(hv, commands, what="creating the overlays", temporary=temps, space_in=where)


async def remove_files(hv: Hypervisor, paths: Sequence[str]) -> None:
    if paths:
        await run_script(hv, [["rm", "-f", "--", *confined(hv, paths)]], what="removing files")


async def rename(hv: Hypervisor, source: str, target: str) -> None:
    await run_script(hv, [["mv", "-f", "--", *confined(hv, [source, target])]], what="renaming the disk")


async def existing_files(hv: Hypervisor, paths: Sequence[str]) -> list[str]:
    """Which of ``paths`` exist on the hypervisor (one command for all)."""
    if not paths:
        return []
    probe = 'for f in "$@"; do if [ -e "$f" ]; then printf "%s\\n" "$f"; fi; done'
    commands = [["sh", "-c", probe, "sh", *confined(hv, paths)]]
    output = await run_script(hv, commands, what="looking for files")
    found = {line for line in output.splitlines() if line}
    return [path for path in paths if path in found]


async def image_info(hv: Hypervisor, path: str) -> dict[str, Any]:
    """``qemu-img info`` of a disk image (force-share: it may be in use)."""
    (path,) = confined(hv, [path])
    output = await run_script(hv, [["qemu-img", "info", "--output=json", "-U", path]], what=f"reading {path}")
    info: dict[str, Any] = json.loads(output)
    return info


async def backing_files(hv: Hypervisor, paths: Sequence[str]) -> dict[str, str | None]:
    """The backing file recorded in each existing image of ``paths`` (one command for all)."""
    if not paths:
        return {}
    each = (
        'for f in "$@"; do if [ -e "$f" ]; then printf "%s\\n" "$f"; '
        'qemu-img info -U --output=json "$f" | tr -d "\\n"; printf "\\n"; fi; done'
    )
    output = await run_script(hv, [["sh", "-c", each, "sh", *confined(hv, paths)]], what="reading disks")
    lines = output.splitlines()
    found: dict[str, str | None] = {}
    for path, text in zip(lines[0::2], lines[1::2], strict=False):
        info = json.loads(text)
        value = info.get("full-backing-filename") or info.get("backing-filename")
        found[path] = str(value) if value else None
    return found


async def backing_file(hv: Hypervisor, path: str) -> str | None:
    """The backing file recorded in a qcow2 image (None for a standalone image)."""
    info = await image_info(hv, path)
    value = info.get("full-backing-filename") or info.get("backing-filename")
    return str(value) if value else None
