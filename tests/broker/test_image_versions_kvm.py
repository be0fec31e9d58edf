"""A pool published to a new image version while a user holds one of its desktops: that desktop
does not change under them, and moves to the new version when they return it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.vms.errors import Refused
from app.vms.records import children_of, vm_by_name
from tests.broker.desktop_lab import DesktopLab
from tests.vms.test_initial_vdi import backing_of, has_pattern, make_initial_with_children, write_pattern

pytestmark = pytest.mark.kvm


async def test_a_held_desktop_keeps_its_version_until_returned_then_moves_to_the_new_one(
    lab: DesktopLab,
) -> None:
    world = lab.world
    service = world.service
    initial_id, _ = await make_initial_with_children(world, 2, guest="banner")
    children = await children_of(lab.db, initial_id)
    ann_id, ann = await lab.client("ann")
    # No reset on hand-out: a returned desktop is power-cycled only because its version changed.
    pool_id = await lab.pool("gold", children, [ann_id], reset_on_handout=False)
    _, desktop = await ann.ready(pool_id)
    held = await lab.vm(desktop.vm_id)
    other = next(child for child in children if child.id != held.id)
    boot = lab.domain_id(held)
    images = world.h0.images_dir
    v1, v2 = images / f"{world.name('init')}.v1.qcow2", images / f"{world.name('init')}.v2.qcow2"

    source = await vm_by_name(lab.db, world.name("gold"))
    assert source is not None
    write_pattern(Path(source.disk_path))
    published = await service.images.publish(initial_id, origin="source")
    assert (await service.operations.wait(published)).state == "succeeded"
    rolled = await service.operations.wait(await service.images.rollout(initial_id))
    assert rolled.state == "succeeded", rolled.error
    assert rolled.message.startswith("Moved 1 VDI machine of"), rolled.message
    assert backing_of(Path(other.disk_path)) == str(v2), "the idle desktop moved at once"

    # Ann's desktop did not change under her: same QEMU process, same disk, still hers.
    assert lab.domain_id(held) == boot
    assert backing_of(Path(held.disk_path)) == str(v1) and not has_pattern(Path(held.disk_path))
    assert (await lab.vm(held.id)).assigned_user_id == ann_id
    again = await ann.request(pool_id)
    assert again.json()["status"] == "ready" and again.json()["lease"]["id"] == desktop.lease_id
    state = await service.images.state(initial_id)
    v1_id = next(v.id for v in state.versions if v.label == "v1")
    with pytest.raises(Refused, match=held.name) as refused:
        await service.images.plan_delete(initial_id, v1_id)
    assert refused.value.code == "version_in_use"

    # Returned: it moves to v2 and boots afresh there, and nobody holds v1 any more.
    assert (await ann.release(desktop.lease_id)).status_code == 204
    returned = await lab.wait_vm_free(held.id)
    assert state.target is not None and returned.image_version_id == state.target.id
    assert backing_of(Path(held.disk_path)) == str(v2) and has_pattern(Path(held.disk_path))
    assert lab.domain_id(held) != boot, "started again, on the new version"
    assert returned.last_user_id is None, "a fresh disk: nothing of Ann's is left"
    plan = await service.images.plan_delete(initial_id, v1_id)
    await service.images.delete(initial_id, v1_id, confirmed_files=plan.files)
    assert not v1.exists()
