"""Disk files on a hypervisor, over real SSH as the service user: overlays, copies with
progress, nothing half-written under a final name, and nothing outside the hypervisor's
directories."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.hyper.disks import DiskOperations, ProgressParser
from app.hyper.errors import CommandError, HypervisorError, PathNotAllowed
from app.hyper.session import Session
from tests.hyper.conftest import ssh_record
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost

MIB = 1024 * 1024


@pytest.fixture
def disks(h0_session: Session, h0: LibvirtHost) -> DiskOperations:
    return DiskOperations(h0_session.runner, ssh_record(h0).dirs)


@pytest.fixture
def workdir(h0: LibvirtHost, request: pytest.FixtureRequest) -> Iterator[dict[str, Path]]:
    """Per-test file names in h0's images and volatile dirs, removed afterwards."""
    tag = request.node.name.replace("[", "-").replace("]", "")[:40]
    paths = {
        "images": h0.images_dir,
        "volatile": h0.volatile_dir,
        "iso": h0.dir / "iso",
    }
    yield {name: path / tag for name, path in paths.items()}
    for path in paths.values():
        for leftover in path.glob(f"{tag}*"):
            if leftover.is_dir():
                subprocess.run(["rm", "-rf", str(leftover)], check=True)
            else:
                leftover.unlink()


def qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True, text=True
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".part-" in p.name)


def patterned_raw(path: Path, size_mib: int) -> Path:
    """A raw disk full of non-zero data (so a copy really has work to do)."""
    block = bytes([0xAB]) * MIB
    with open(path, "wb") as fh:
        for _ in range(size_mib):
            fh.write(block)
    path.chmod(0o644)
    return path


async def test_an_overlay_is_created_on_its_base_by_the_service_user(
    disks: DiskOperations, workdir: dict[str, Path], guest_images: GuestImages, h0: LibvirtHost
) -> None:
    base = Path(f"{workdir['images']}-base.qcow2")
    base.write_bytes(guest_images.base("banner").read_bytes())
    base.chmod(0o644)
    overlay = Path(f"{workdir['volatile']} overlay.qcow2")

    await disks.create_overlay(str(base), str(overlay))

    info = qemu_img_info(overlay)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"
    assert overlay.stat().st_uid == int(subprocess.check_output(["id", "-u", h0.ssh_user]))
    assert temp_files(h0.volatile_dir) == []


async def test_an_existing_overlay_is_not_replaced_unless_asked(
    disks: DiskOperations, workdir: dict[str, Path], guest_images: GuestImages
) -> None:
    base = Path(f"{workdir['images']}-base.qcow2")
    base.write_bytes(guest_images.base("banner").read_bytes())
    overlay = Path(f"{workdir['volatile']}-ovl.qcow2")
    await disks.create_overlay(str(base), str(overlay))
    overlay_inode = overlay.stat().st_ino

    with pytest.raises(HypervisorError, match="already exists"):
        await disks.create_overlay(str(base), str(overlay))
    assert overlay.stat().st_ino == overlay_inode

    await disks.create_overlay(str(base), str(overlay), replace=True)
    assert overlay.stat().st_ino != overlay_inode
    assert qemu_img_info(overlay)["backing-filename"] == str(base)


async def test_an_overlay_on_a_missing_base_fails_and_leaves_nothing(
    disks: DiskOperations, workdir: dict[str, Path], h0: LibvirtHost
) -> None:
    overlay = Path(f"{workdir['volatile']}-ovl.qcow2")
    with pytest.raises(CommandError):
        await disks.create_overlay(f"{workdir['images']}-missing.qcow2", str(overlay))
    assert not overlay.exists()
    assert temp_files(h0.volatile_dir) == []


async def test_a_disk_copy_reports_rising_progress_to_100_and_leaves_only_the_target(
    disks: DiskOperations, workdir: dict[str, Path], h0: LibvirtHost
) -> None:
    source = patterned_raw(Path(f"{workdir['images']}-src.raw"), 64)
    target = Path(f"{workdir['volatile']}-copy.qcow2")
    seen: list[float] = []

    async def on_progress(percent: float) -> None:
        seen.append(percent)

    await disks.convert_disk(str(source), str(target), on_progress, op_id="op42", src_format="raw")

    assert seen[-1] == 100.0
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert len(seen) > 3, f"progress came in one piece: {seen}"
    assert qemu_img_info(target)["format"] == "qcow2"
    assert "backing-filename" not in qemu_img_info(target)
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source), str(target)])
    assert compare.returncode == 0, "the copy differs from its source"
    assert temp_files(h0.volatile_dir) == []


async def test_a_failed_copy_leaves_neither_target_nor_temporary_file(
    disks: DiskOperations, workdir: dict[str, Path], h0: LibvirtHost
) -> None:
    not_qcow2 = patterned_raw(Path(f"{workdir['images']}-garbage.qcow2"), 1)
    target = Path(f"{workdir['volatile']}-copy.qcow2")
    with pytest.raises(CommandError) as failure:
        await disks.convert_disk(str(not_qcow2), str(target), op_id="op43")
    assert "qemu-img" in str(failure.value)
    assert not target.exists()
    assert temp_files(h0.volatile_dir) == []


async def test_a_cancelled_copy_is_stopped_and_its_temporary_file_removed(
    disks: DiskOperations, workdir: dict[str, Path], h0: LibvirtHost
) -> None:
    source = patterned_raw(Path(f"{workdir['images']}-src.raw"), 256)
    target = Path(f"{workdir['volatile']}-copy.qcow2")
    started = asyncio.Event()
    temp_seen: list[list[str]] = []

    def on_progress(percent: float) -> None:
        if 0 < percent < 100 and not started.is_set():
            temp_seen.append(temp_files(h0.volatile_dir))
            started.set()

    copy = asyncio.create_task(
        disks.convert_disk(str(source), str(target), on_progress, op_id="op44", src_format="raw")
    )
    await asyncio.wait_for(started.wait(), 30)
    copy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await copy
    assert temp_seen == [[f"{target.name}.part-op44"]], "the copy was written under a temporary name"
    assert not target.exists()
    assert temp_files(h0.volatile_dir) == []


async def test_copying_onto_an_existing_disk_is_refused(
    disks: DiskOperations, workdir: dict[str, Path]
) -> None:
    source = patterned_raw(Path(f"{workdir['images']}-src.raw"), 1)
    target = Path(f"{workdir['volatile']}-copy.qcow2")
    target.write_bytes(b"precious")
    with pytest.raises(HypervisorError, match="already exists"):
        await disks.convert_disk(str(source), str(target), src_format="raw")
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "{images}/../../../etc/passwd", "{images}/./x.qcow2", "relative.qcow2"],
)
async def test_paths_outside_the_hypervisor_directories_are_refused_before_anything_runs(
    disks: DiskOperations, h0: LibvirtHost, path: str
) -> None:
    bad = path.format(images=h0.images_dir)
    good = str(h0.images_dir / "fine.qcow2")
    for attempt in (
        disks.remove_file(bad),
        disks.file_exists(bad),
        disks.free_bytes(bad),
        disks.create_overlay(bad, good),
        disks.create_overlay(good, bad),
        disks.convert_disk(bad, good),
        disks.convert_disk(good, bad),
    ):
        with pytest.raises(PathNotAllowed):
            await attempt
    assert Path("/etc/passwd").exists()


async def test_files_can_be_checked_and_removed(disks: DiskOperations, workdir: dict[str, Path]) -> None:
    path = Path(f"{workdir['images']} to remove.qcow2")
    path.write_bytes(b"x")
    assert await disks.file_exists(str(path)) is True
    await disks.remove_file(str(path))
    assert not path.exists()
    assert await disks.file_exists(str(path)) is False
    await disks.remove_file(str(path))  # removing what is gone is not an error


async def test_isos_are_listed_with_their_sizes_recursively(disks: DiskOperations, h0: LibvirtHost) -> None:
    iso_dir = h0.dir / "iso"
    (iso_dir / "installers").mkdir(exist_ok=True)
    files = {
        iso_dir / "debian 12 $(id).iso": 2048,
        iso_dir / "installers" / "virtio-win.iso": 4096,
    }
    for path, size in files.items():
        path.write_bytes(b"\0" * size)
    (iso_dir / "link.iso").symlink_to(iso_dir / "installers" / "virtio-win.iso")
    try:
        # h0 is shared by the session: other tests' ISOs may lie there too.
        ours = {str(path) for path in files} | {str(iso_dir / "link.iso")}
        listed = [found for found in await disks.list_isos() if found.path in ours]
        assert [(f.path, f.size) for f in listed] == sorted((str(p), s) for p, s in files.items())
        assert listed[0].name == "debian 12 $(id).iso"
    finally:
        subprocess.run(["rm", "-rf", str(iso_dir / "installers"), str(iso_dir / "link.iso")], check=True)
        for path in files:
            path.unlink(missing_ok=True)


async def test_free_space_is_what_the_filesystem_reports(disks: DiskOperations, h0: LibvirtHost) -> None:
    free = await disks.free_bytes(str(h0.images_dir))
    stat = os.statvfs(h0.images_dir)
    assert abs(free - stat.f_bavail * stat.f_frsize) < 256 * MIB


def test_progress_is_read_from_qemu_img_output_split_anywhere() -> None:
    seen: list[float] = []
    parser = ProgressParser(seen.append)
    for chunk in ["    (0.00/100%)\r    (1", "2.50/100%)\r", "    (12.50/100%)\r    (100.00/100%)\r\n"]:
        parser.feed(chunk)
    assert seen == [0.0, 12.5, 100.0]
