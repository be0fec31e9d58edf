"""Golden image versions on a real hypervisor: publish N+1 beside N, roll the idle VDI machines onto
it, roll back, delete an unused version; an initial whose own disk children run on."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.live.hub import Subscription
from app.vms.records import children_of, get_vm, vm_by_name
from tests.dashboard import BrowserLikeClient
from tests.services.libvirt_host import LibvirtHost
from tests.vms.test_initial_vdi import backing_of, has_pattern, make_initial_with_children, write_pattern
from tests.vms.world import VmWorld, WorldFactory

pytestmark = pytest.mark.kvm

API = "/api/v1/admin/vms"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def finished(world: VmWorld, answer: Any) -> str:
    """Wait for the operation a 202 answer names; its final message."""
    assert answer.status_code == 202, answer.text
    operation = await world.service.operations.wait(answer.json()["operation"]["id"])
    assert operation.state == "succeeded", operation.error
    return operation.message


async def image(admin: BrowserLikeClient, initial_id: int) -> dict[str, Any]:
    response = await admin.get(f"{API}/{initial_id}/versions")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()["image"]
    return state


def image_messages(subscription: Subscription, initial_id: int) -> list[dict[str, Any]]:
    seen = []
    while not subscription.queue.empty():
        event = subscription.queue.get_nowait()
        if event.topic == "image" and event.data["initial_id"] == initial_id:
            seen.append(event.data)
    return seen


def overlay_on(world: VmWorld, disk: Path, base: Path) -> None:
    """Recreate ``disk`` as an overlay of ``base`` behind the dashboard's back."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(disk)], check=True
    )
    shutil.chown(disk, world.h0.host.ssh_user, "libvirt")
    disk.chmod(0o664)


async def domain_id(world: VmWorld, name: str) -> str:
    return (await asyncio.to_thread(world.h0.host.virsh, "domid", name)).strip()


async def test_a_version_is_published_beside_the_old_rolled_onto_idle_machines_and_rolled_back(
    vm_world: VmWorld,
) -> None:
    world, images = vm_world, vm_world.h0.images_dir
    admin = await world.admin()
    # The diskwriter guest keeps running after it counted its boot.
    initial_id, _ = await make_initial_with_children(world, 2, guest="diskwriter")
    running, idle = await children_of(world.db, initial_id)
    v1, v2 = images / f"{world.name('init')}.v1.qcow2", images / f"{world.name('init')}.v2.qcow2"
    state = await image(admin, initial_id)
    assert [v["label"] for v in state["versions"]] == ["v1"] and state["target"] == "v1"
    v1_id = state["versions"][0]["id"]
    refused = await admin.get(f"{API}/{initial_id}/versions/{v1_id}/delete-plan")
    assert refused.status_code == 409 and refused.json()["error"] == "version_in_use"

    await world.service.power(running.id, "start")
    await world.wait_state(running.id, "running")
    first_run = await domain_id(world, running.name)
    before = sha256(v1)
    source = await vm_by_name(world.db, world.name("gold"))
    assert source is not None
    write_pattern(Path(source.disk_path))  # the admin updated the golden image

    subscription = world.hub.subscribe(is_admin=True)
    answer = await admin.post(f"{API}/{initial_id}/versions", json={"origin": "source", "note": "patched"})
    message = await finished(world, answer)
    assert message.startswith(f"Published v2 of {world.name('init')}"), message
    assert any(m["target"] == "v2" for m in image_messages(subscription, initial_id)), "announced live"
    subscription.close()
    assert backing_of(v2) is None and has_pattern(v2), "v2 is a standalone copy of the new source"
    assert sha256(v1) == before, "v1, which the machines run on, was not written"
    assert backing_of(Path(running.disk_path)) == backing_of(Path(idle.disk_path)) == str(v1)
    assert await domain_id(world, running.name) == first_run, "the running machine was left alone"
    state = await image(admin, initial_id)
    assert state["target"] == "v2" and state["rollout"] == {"on_target": 0, "total": 2}
    initial = await get_vm(world.db, initial_id)
    assert initial is not None and backing_of(Path(initial.disk_path)) == str(v2), "the working disk follows"

    message = await finished(world, await admin.post(f"{API}/{initial_id}/versions/rollout"))
    assert message.startswith("Moved 2 VDI machines"), message
    for child in (running, idle):
        assert backing_of(Path(child.disk_path)) == str(v2) and has_pattern(Path(child.disk_path))
    await world.wait_state(running.id, "running")
    assert await domain_id(world, running.name) != first_run, "the running one was started again on v2"
    assert (await image(admin, initial_id))["rollout"] == {"on_target": 2, "total": 2}

    rolled = await admin.post(f"{API}/{initial_id}/versions/rollback")
    assert rolled.status_code == 200 and rolled.json()["image"]["target"] == "v1"
    assert [c["behind"] for c in rolled.json()["image"]["children"]] == [True, True]
    # An admin's reset of a running desktop nobody holds is its fresh boot on the target.
    on_v2 = await domain_id(world, running.name)
    reset = await admin.post(f"{API}/{running.id}/power", json={"action": "reset"})
    assert reset.status_code == 202, reset.text
    assert backing_of(Path(running.disk_path)) == str(v1) and not has_pattern(Path(running.disk_path))
    await world.wait_state(running.id, "running")
    assert await domain_id(world, running.name) != on_v2, "started again on v1"
    message = await finished(world, await admin.post(f"{API}/{initial_id}/versions/rollout"))
    assert message.startswith("Moved 1 VDI machine of"), message
    for child in (running, idle):
        assert backing_of(Path(child.disk_path)) == str(v1) and not has_pattern(Path(child.disk_path))

    # A move cut short after the overlay was recreated on v2 but before its row said so: the disk
    # is asked before v2 may go, and the row is put right.
    v2_id = (await image(admin, initial_id))["versions"][1]["id"]
    overlay_on(world, Path(idle.disk_path), v2)
    cut_short = await admin.get(f"{API}/{initial_id}/versions/{v2_id}/delete-plan")
    assert cut_short.status_code == 409 and cut_short.json()["vms"] == [idle.name], cut_short.text
    assert [c["version"] for c in (await image(admin, initial_id))["children"]] == ["v1", "v2"]
    await finished(world, await admin.post(f"{API}/{initial_id}/versions/rollout"))

    # v2 is used by no machine now: its plan names its file (and the working disk on it).
    plan = (await admin.get(f"{API}/{initial_id}/versions/{v2_id}/delete-plan")).json()["plan"]
    assert plan["files"] == [str(v2)]
    assert plan["working_disk"] == {"path": initial.disk_path, "recreated_on": "v1"}
    wrong = await admin.post(f"{API}/{initial_id}/versions/{v2_id}/delete", json={"confirm_files": []})
    assert wrong.status_code == 400 and "confirm_files" in wrong.json()["fields"]
    assert v2.exists()
    deleted = await admin.post(
        f"{API}/{initial_id}/versions/{v2_id}/delete", json={"confirm_files": plan["files"]}
    )
    assert deleted.status_code == 200, deleted.text
    assert not v2.exists() and v1.exists()
    assert [v["label"] for v in (await image(admin, initial_id))["versions"]] == ["v1"]
    assert backing_of(Path(initial.disk_path)) == str(v1)
    await world.service.power(running.id, "poweroff")


async def test_an_initial_whose_own_disk_children_run_on_starts_only_after_they_are_forced_off(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost
) -> None:
    # The banner guest ignores the ACPI power button: a shutdown ends forced, after the grace time.
    world = await world_factory([hypervisor_host], vms={"shutdown_grace": 1})
    admin = await world.admin()
    # As made before versions existed (or adopted from elsewhere): VDI overlays of the initial's disk.
    made = await world.service.create(
        {"name": world.name("old"), "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    initial_id = made.vm_ids[0]
    initial = await get_vm(world.db, initial_id)
    assert initial is not None
    world.install_guest(world.h0, initial.disk_path, "banner")
    await world.service.classify(initial_id, "initial", None)
    vdi = await world.service.create_vdi({"initial_id": initial_id, "prefix": world.name("desk"), "count": 2})
    assert vdi.operation_id is not None
    assert (await world.service.operations.wait(vdi.operation_id)).state == "succeeded"
    children = await children_of(world.db, initial_id)
    assert all(backing_of(Path(child.disk_path)) == initial.disk_path for child in children)
    await world.service.power(children[0].id, "start")
    await world.wait_state(children[0].id, "running")
    names = sorted(child.name for child in children)

    start = f"{API}/{initial_id}/power"
    refused = await admin.post(start, json={"action": "start"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "children_depend" and refused.json()["vms"] == names
    partly = await admin.post(start, json={"action": "start", "confirm_children": names[:1]})
    assert partly.status_code == 409 and partly.json()["error"] == "children_depend"
    await world.service.set_flags(initial_id, {"locked": True})
    locked = await admin.post(start, json={"action": "start", "confirm_children": names})
    assert locked.status_code == 409 and locked.json()["error"] == "locked"
    await world.service.set_flags(initial_id, {"locked": False})
    assert await world.hv().domain_state(children[0].name) == "running", "nothing was stopped meanwhile"

    confirmed = await admin.post(start, json={"action": "start", "confirm_children": names})
    assert confirmed.status_code == 202, confirmed.text
    await world.wait_state(initial_id, "running")
    for child in await children_of(world.db, initial_id):
        assert child.maintenance, f"{child.name} is in maintenance"
        assert await world.hv().domain_state(child.name) == "shutoff"

    # Publishing the running edit: refused unless it may be shut down first.
    refused = await admin.post(f"{API}/{initial_id}/versions", json={"origin": "initial"})
    assert refused.status_code == 409 and refused.json()["error"] == "running"
    answer = await admin.post(f"{API}/{initial_id}/versions", json={"origin": "initial", "shutdown": True})
    await finished(world, answer)
    state = await image(admin, initial_id)
    v1, v2 = state["versions"]
    # The disk the machines ran on is kept as v1 (they still run on it); v2 is the published edit.
    assert (v1["origin"], v1["path"], v1["children"]) == ("adopted", initial.disk_path, names)
    assert (v2["origin"], state["target"]) == ("initial", "v2")
    assert backing_of(Path(v2["path"])) is None
    # The initial's working disk moved off the machines' disk: starting it needs no confirmation now.
    assert state["working_disk"] == {
        "path": str(world.h0.images_dir / f"{world.name('old')}.edit.qcow2"),
        "version": "v2",
        "children_depend": [],
    }
    assert (await admin.post(start, json={"action": "start"})).status_code == 202
    await world.wait_state(initial_id, "running")
    assert backing_of(Path(state["working_disk"]["path"])) == v2["path"]
    await world.service.power(initial_id, "poweroff")
