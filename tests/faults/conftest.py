"""Fixtures and checks shared by the fault tests.

The dashboards here watch their hypervisors closely (a lost connection is fenced after
2 s, reconnection tried every second or two): the behaviour under test is the same as
with the production defaults, it just happens within a test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.vms.records import get_vm, list_vms
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.services.sshd import TEST_USER
from tests.vms import conftest as vm_fixtures
from tests.vms.world import HostInWorld, VmWorld
from tests.waiting import eventually

world_factory = vm_fixtures.world_factory

FAST_FENCING: dict[str, Any] = {
    "connect_timeout": 3.0,
    "health_interval": 1.0,
    "health_timeout": 3.0,
    "fence_after": 2.0,
    "reconnect_initial": 0.5,
    "reconnect_max": 2.0,
    "keepalive_interval": 1,
    "keepalive_count": 2,
}
FAULT_SETTINGS: dict[str, Any] = {"hypervisors": FAST_FENCING, "broker": {"reaper_interval": 0.5}}


@pytest.fixture(scope="session")
def small_disk_host(run_dir: RunDir) -> Iterator[LibvirtHost]:
    """Hypervisor h2 whose images directory is a 64 MiB filesystem of its own (tmpfs in its mount
    namespace): copies and overlays there run out of space for real."""
    host = LibvirtHost(run_dir, "h2", images_size="64M")
    try:
        host.start()
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def copy_source(run_dir: RunDir) -> Path:
    """A qcow2 disk holding 3 GiB of data (written once per session): a copy of it lasts seconds even
    on a quiet machine (768 MiB took one), long enough to be interrupted. Sources hard-link it (the
    run dir is one filesystem)."""
    path = run_dir.sub("fault-disks") / "patterned.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "4G"], check=True)
    subprocess.run(
        # One qemu-io request is at most 2 GiB: three of 1 GiB.
        [
            "qemu-io",
            "-f",
            "qcow2",
            *(arg for start in range(3) for arg in ("-c", f"write -P 0x5a {start}G 1G")),
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    shutil.chown(path, TEST_USER, "libvirt")
    path.chmod(0o664)
    return path


async def source_with_data(world: VmWorld, copy_source: Path, where: HostInWorld, suffix: str = "src") -> int:
    """A source VM on ``where`` whose disk is ``copy_source`` (hard-linked: never started nor written)."""
    created = await world.service.create(
        {"name": world.name(suffix), "kind": "source", "hypervisor_id": where.id, "disk_size_gib": 2}
    )
    source = await get_vm(world.db, created.vm_ids[0])
    assert source is not None
    disk = Path(source.disk_path)
    disk.unlink()
    os.link(copy_source, disk)
    return source.id


async def until_operation(world: VmWorld, op_id: int, reached: str) -> None:
    """Wait until the running operation's message starts with ``reached``."""

    async def there() -> bool:
        operation = await world.service.operations.get(op_id)
        assert operation is not None
        assert operation.active, f"operation ended before '{reached}': {operation.state} {operation.error}"
        return operation.message.startswith(reached)

    await eventually(there, f"the operation at '{reached}'")


def files_in_host(host: LibvirtHost, *directories: str, pattern: str = "*") -> list[str]:
    """Paths under ``directories`` as the host itself sees them (its own mounts included)."""
    found = host.run_in_host(["find", *directories, "-mindepth", "1", "-name", pattern, "-print"])
    return sorted(line for line in found.stdout.splitlines() if line)


def partial_files(host: LibvirtHost, tag: str) -> list[str]:
    """Files a copy or an overlay is written to before its rename (``*.part-*``, ``.*.part``)."""
    dirs = [str(host.images_dir), str(host.volatile_dir)]
    return [
        path
        for path in files_in_host(host, *dirs, pattern="*.part*")
        if path.rsplit("/", 1)[-1].lstrip(".").startswith(tag)
    ]


def libvirt_states(host: LibvirtHost, tag: str) -> dict[str, str]:
    states = {}
    for name in host.domain_names():
        if name.startswith(tag):
            states[name] = host.virsh("domstate", name).strip().replace("shut off", "shutoff")
    return states


async def rows_agree_with_libvirt(world: VmWorld, host: LibvirtHost) -> dict[str, str]:
    """Wait until the table's VMs of ``host`` say what libvirt says; the agreed states."""
    hv_id = next(h.id for h in world.hosts if h.host is host)

    async def agreed() -> tuple[dict[str, str]] | None:
        await world.settle()
        actual = await asyncio.to_thread(libvirt_states, host, world.tag)
        rows = {vm.name: vm.state for vm in await list_vms(world.db) if vm.hypervisor_id == hv_id}
        # In a tuple: no VMs on either side is an agreement too.
        return (actual,) if rows == actual else None

    (states,) = await eventually(agreed, "the VM rows saying what libvirt says", interval=0.2)
    return states
