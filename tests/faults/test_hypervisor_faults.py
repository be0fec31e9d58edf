"""A hypervisor's services fail in the middle of long operations: its libvirtd restarts during a
populate, its sshd dies during a copy. Every operation ends failed (with the reason) or done,
no guest is left frozen half-started, no half-written file stays, and the VM table agrees
with libvirt once the hypervisor answers again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.vms.records import vms_by_ids
from tests.faults.conftest import (
    FAST_FENCING,
    FAULT_SETTINGS,
    partial_files,
    rows_agree_with_libvirt,
    source_with_data,
    until_operation,
)
from tests.services.libvirt_host import LibvirtHost
from tests.vms.test_initial_vdi import make_initial_with_children
from tests.vms.world import GENEROUS, WorldFactory
from tests.waiting import eventually

pytestmark = pytest.mark.kvm

PATIENT = {**FAST_FENCING, "fence_after": 10.0, "connect_timeout": 10.0}


async def test_libvirtd_restarted_in_the_middle_of_a_populate(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost
) -> None:
    # A restarted libvirtd takes a few seconds: the populate waits for the connection to come back.
    world = await world_factory([hypervisor_host], **{**FAULT_SETTINGS, "hypervisors": PATIENT})
    # Ten desktops: their first boots take long enough to be caught being set up on a quiet machine
    # (the stored progress message changes at most once a second).
    initial_id, child_ids = await make_initial_with_children(world, 10)
    op_id = await world.service.populate(initial_id, actor="tester")
    # Overlays recreated, first boots being set up (paused until all are up): libvirtd goes away.
    await until_operation(world, op_id, "Set up ")
    await asyncio.to_thread(hypervisor_host.restart_libvirtd)
    operation = await world.service.operations.wait(op_id)

    assert operation.state in ("succeeded", "failed"), operation
    if operation.state == "failed":
        assert "failed:" in operation.error and "stay in maintenance" in operation.error, operation.error
    states = await rows_agree_with_libvirt(world, hypervisor_host)
    children = await vms_by_ids(world.db, child_ids)
    for child in children:
        assert states[child.name] != "paused", f"{child.name} was left frozen half-started: {operation.error}"
        if child.name in operation.error:
            assert child.maintenance, f"{child.name} failed its populate but left maintenance"
        else:
            # Populated: its first boot ran (this guest powers itself off after it).
            assert not child.maintenance, (child.name, operation.error)
    assert partial_files(hypervisor_host, world.tag) == []
    assert world.hv().state == "up"


async def test_sshd_killed_during_a_copy_disk(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, copy_source: Path
) -> None:
    world = await world_factory([hypervisor_host], **FAULT_SETTINGS)
    source_id = await source_with_data(world, copy_source, world.h0)
    initial = await world.service.create_initial({"name": world.name("init"), "source_id": source_id})
    op_id = initial.operation_id
    assert op_id is not None
    await until_operation(world, op_id, "Copying: ")
    await asyncio.to_thread(hypervisor_host.stop_sshd)
    try:
        operation = await world.service.operations.wait(op_id)
        assert operation.state == "failed", operation
        assert "cut off: the SSH connection to the hypervisor was lost" in operation.error, operation.error
    finally:
        await asyncio.to_thread(hypervisor_host.start_sshd)
    await world.registry.wait_for_state(world.h0.id, "up", GENEROUS)
    # Back: the temporary file is removed, and the operation says so.
    await eventually(lambda: not partial_files(hypervisor_host, world.tag), "the temporary file removed")

    async def said() -> bool:
        return "Temporary file removed" in (await world.service.operations.wait(op_id)).message

    await eventually(said, "the operation saying the temporary file was removed")
    disk = world.h0.images_dir / f"{world.name('init')}.qcow2"
    assert not disk.exists(), "no half-copied disk under the real name"
    await rows_agree_with_libvirt(world, hypervisor_host)
