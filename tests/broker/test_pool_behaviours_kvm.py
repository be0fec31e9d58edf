"""Pool behaviours on real desktops (boot-sector guests on h0): keep-ready keeps desktops
started and refills after hand-outs, a pool may give one user several desktops, and a user
powers their own desktop from the portal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from app.vms.records import Vm
from tests.broker.desktop_lab import GENEROUS, DesktopLab
from tests.services import guests
from tests.waiting import eventually

pytestmark = pytest.mark.kvm


def running(lab: DesktopLab, desktops: list[Vm]) -> set[str]:
    """The names of ``desktops`` whose domain runs, as libvirt says."""
    host = lab.world.h0.host
    return {vm.name for vm in desktops if host.virsh("domstate", vm.name).strip() == "running"}


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, what, timeout=GENEROUS)
    assert await check(), what  # and it stays so


async def test_keep_ready_keeps_n_desktops_started_and_refills_after_hand_outs(lab: DesktopLab) -> None:
    desktops = [await lab.desktop_vm(f"ready{n}") for n in range(4)]
    ann_id, ann = await lab.client("ann")
    bob_id, bob = await lab.client("bob")
    pool_id = await lab.pool("ready", desktops, [ann_id, bob_id], keep_ready=2, reset_on_handout=False)

    async def started(count: int) -> bool:
        return len(await asyncio.to_thread(running, lab, desktops)) == count

    # Two started before anyone asks (and no more: the other two stay off).
    await until(lambda: started(2), "two desktops kept started")
    kept = await asyncio.to_thread(running, lab, desktops)
    assert len(kept) == 2

    # A hand-out gets a started one at once; keep-ready starts another to stay at two free.
    seen, desktop = await ann.ready(pool_id)
    assert seen == ["ready"], seen
    handed = await lab.vm(desktop.vm_id)
    assert handed.name in kept
    await until(lambda: started(3), "a third desktop started to refill the pool")

    seen, second = await bob.ready(pool_id)
    assert seen == ["ready"] and second.vm_id != desktop.vm_id, seen
    await until(lambda: started(4), "the last desktop started to refill the pool")
    free_running = {vm.name for vm in desktops if vm.id not in (desktop.vm_id, second.vm_id)}
    assert free_running <= await asyncio.to_thread(running, lab, desktops)


async def test_a_pool_gives_one_user_up_to_max_per_user_desktops(lab: DesktopLab) -> None:
    desktops = [await lab.desktop_vm(f"multi{n}") for n in range(3)]
    ann_id, ann = await lab.client("ann")
    pool_id = await lab.pool("multi", desktops, [ann_id], max_per_user=2, reset_on_handout=False)

    _, first = await ann.ready(pool_id)
    _, second = await ann.ready(pool_id, new=True)
    assert first.vm_id != second.vm_id and first.lease_id != second.lease_id
    # Both run, both are hers, both consoles are hers to open.
    assert {first.vm_id, second.vm_id} == {
        vm.id for vm in desktops if vm.name in await asyncio.to_thread(running, lab, desktops)
    }
    for desktop in (first, second):
        assert (await lab.vm(desktop.vm_id)).assigned_user_id == ann_id
        assert (await lab.lease(desktop.lease_id)).ended_at is None

    third = await ann.request(pool_id, new=True)
    assert third.status_code == 409, third.text
    assert third.json()["error"] == "desktop_limit"
    assert "You already hold 2 desktops of this pool." in third.text
    # Asking again without "new" renews the newest of hers; the third desktop stays free.
    again = await ann.request(pool_id)
    assert again.status_code == 200 and again.json()["lease"]["id"] == second.lease_id
    spare = next(vm for vm in desktops if vm.id not in (first.vm_id, second.vm_id))
    assert (await lab.vm(spare.id)).assigned_user_id is None

    # Giving one back makes room for another.
    assert (await ann.release(first.lease_id)).status_code == 204
    await lab.wait_vm_free(first.vm_id)
    _, replacement = await ann.ready(pool_id, new=True)
    assert replacement.lease_id not in (first.lease_id, second.lease_id)


async def test_a_user_shuts_down_forces_off_and_starts_their_own_desktop_from_the_portal(
    lab: DesktopLab,
) -> None:
    # This guest powers itself off when the ACPI power button is pressed, as an OS does.
    vm = await lab.desktop_vm("own", "banner-acpi")
    ann_id, ann = await lab.client("ann")
    await lab.client("bob")
    pool_id = await lab.pool("own", [vm], [ann_id], reset_on_handout=False)
    await ann.ready(pool_id)
    portal = await lab.portal("ann")

    async def power(action: str) -> str:
        response = await portal.post(f"/client/desktops/{vm.id}/power", json={"action": action})
        assert response.status_code == 202, response.text
        return str(response.json()["state"])

    # Booted (the guest painted its screen): an OS ignores the power button until it runs.
    await lab.settled_screen(vm, guests.BLUE)
    assert await power("shutdown") == "stopping"
    await lab.world.wait_state(vm.id, "shutoff")
    assert await power("start") == "starting"
    await lab.world.wait_state(vm.id, "running")
    assert await power("poweroff") == "stopped"
    await lab.world.wait_state(vm.id, "shutoff")

    # Someone else's desktop: refused, and it stays off.
    bob = await lab.portal("bob")
    refused = await bob.post(f"/client/desktops/{vm.id}/power", json={"action": "start"})
    assert (refused.status_code, refused.json()["error"]) == (403, "not_your_desktop")
    assert await asyncio.to_thread(running, lab, [vm]) == set()
    audited = [
        (entry["action"], entry["actor"])
        for entry in reversed(await lab.services.audit.recent())
        if entry["target"] == vm.name and entry["action"] in ("vm_shutdown", "vm_poweroff", "vm_start")
    ]
    assert audited[-3:] == [
        ("vm_shutdown", "ann"),
        ("vm_start", "ann"),
        ("vm_poweroff", "ann"),
    ], audited
