"""Power actions: start, ACPI shutdown, force off, reboot, reset; one VM or all children of an initial.

The lifecycle events, not these functions, write the new state: the hypervisor is
the source of truth and the event path publishes it to browsers.
"""

from __future__ import annotations

import asyncio
from typing import Literal, get_args

from app.hyper import DomainNotFound, Hypervisor, HypervisorError
from app.vms.context import VmContext
from app.vms.disks import remove_files
from app.vms.errors import HypervisorFailure, Invalid, Refused
from app.vms.operations import OperationContext
from app.vms.records import Vm, children_of
from app.vms.volatile import overlay_of, point_definition_at, prepare_boot

PowerAction = Literal["start", "shutdown", "poweroff", "reboot", "reset"]
POWER_ACTIONS: tuple[str, ...] = get_args(PowerAction)
LABELS = {
    "start": "Start",
    "shutdown": "Shut down (ACPI)",
    "poweroff": "Force off",
    "reboot": "Reboot",
    "reset": "Reset",
}
RUNNING = ("running", "paused", "pmsuspended")
# Stopping a VM stays possible on a hypervisor in maintenance: that is how it gets drained.
STOPPING = ("shutdown", "poweroff")


def check_action(action: str) -> PowerAction:
    if action not in POWER_ACTIONS:
        raise Invalid({"action": f"choose one of {', '.join(POWER_ACTIONS)}"})
    return action  # type: ignore[return-value]


async def live_state(hv: Hypervisor, vm: Vm) -> str:
    try:
        return await hv.domain_state(vm.name)
    except HypervisorError as exc:
        raise HypervisorFailure(f"{vm.name}: its domain cannot be read on the hypervisor ({exc})") from exc


async def power(ctx: VmContext, vm_id: int, action: str, *, actor: str = "", client_address: str = "") -> Vm:
    """Apply ``action`` to one VM (refused while an operation holds it)."""
    act = check_action(action)
    vm = await ctx.vm(vm_id)
    if vm.operation_id is not None:
        raise Refused(f"{vm.name} is busy with operation {vm.operation_id}: wait for it to end", code="busy")
    hv = ctx.hypervisor(vm.hypervisor_id, new_work=act not in STOPPING)
    await apply(ctx, vm, hv, act)
    await ctx.audit.record(f"vm_{act}", actor=actor, target=vm.name, client_address=client_address)
    return vm


async def start(ctx: VmContext, vm: Vm, hv: Hypervisor) -> None:
    """Start ``vm`` from the file its flags ask for (a fresh per-boot overlay when volatile).

    A persistent VM costs one read of its definition and the start itself; only a
    volatile one is asked for its state first, since its overlay must never be
    recreated under a running guest.
    """
    async with ctx.overlay_lock(vm.id):
        if vm.volatile and await live_state(hv, vm) in RUNNING:
            raise Refused(f"{vm.name} is already running", code="already_running")
        await prepare_boot(vm, hv)
        try:
            started = await hv.start(vm.name)
        except HypervisorError as exc:
            if vm.volatile:
                await remove_files(hv, [overlay_of(vm, hv)])
            raise HypervisorFailure(f"starting {vm.name} failed: {exc}") from exc
    if not started:
        raise Refused(f"{vm.name} is already running", code="already_running")


async def start_from_own_disk(ctx: VmContext, vm: Vm, hv: Hypervisor) -> None:
    """Start ``vm`` from its own disk whatever its volatile flag (populate's first boot)."""
    async with ctx.overlay_lock(vm.id):
        await point_definition_at(hv, vm.name, vm.disk_path)
        try:
            started = await hv.start(vm.name)
        except HypervisorError as exc:
            raise HypervisorFailure(f"starting {vm.name} failed: {exc}") from exc
    if not started:
        raise Refused(f"{vm.name} is already running", code="already_running")


async def apply(ctx: VmContext, vm: Vm, hv: Hypervisor, action: PowerAction) -> None:
    """Do it; :class:`Refused` when there is nothing to do (already in the wanted state)."""
    if action == "start":
        await start(ctx, vm, hv)
        return
    if await live_state(hv, vm) not in RUNNING:
        raise Refused(f"{vm.name} is not running", code="not_running")
    calls = {"shutdown": hv.shutdown, "poweroff": hv.destroy, "reboot": hv.reboot, "reset": hv.reset}
    try:
        await calls[action](vm.name)
    except HypervisorError as exc:
        raise HypervisorFailure(f"{LABELS[action].lower()} of {vm.name} failed: {exc}") from exc


async def force_off(hv: Hypervisor, vm: Vm) -> bool:
    """Force the VM off if it runs; True when it had to be stopped."""
    try:
        return await hv.destroy(vm.name)
    except DomainNotFound:
        return False
    except HypervisorError as exc:
        if await live_state(hv, vm) in RUNNING:
            raise HypervisorFailure(f"forcing {vm.name} off failed: {exc}") from exc
    return False


async def mass_power(ctx: VmContext, initial_id: int, action: str, *, actor: str = "") -> int:
    """The same action on every VDI child of an initial machine, as one operation; its id."""
    act = check_action(action)
    initial = await ctx.vm(initial_id)
    if initial.kind != "initial":
        raise Invalid({"vm": f"{initial.name} is not an initial machine"})
    children = await children_of(ctx.db, initial.id)
    if not children:
        raise Refused(f"{initial.name} has no VDI machines yet")
    hv = ctx.hypervisor(initial.hypervisor_id, new_work=act not in STOPPING)

    async def work(op: OperationContext) -> str:
        limit = asyncio.Semaphore(max(1, ctx.settings.power_concurrency))
        done: list[str] = []
        skipped: list[str] = []
        failed: dict[str, str] = {}

        async def one(child: Vm) -> None:
            async with limit:
                try:
                    await apply(ctx, child, hv, act)
                    done.append(child.name)
                except Refused:
                    skipped.append(child.name)
                except Exception as exc:
                    failed[child.name] = str(exc)
                count = len(done) + len(skipped) + len(failed)
                await op.progress(100.0 * count / len(children), f"{LABELS[act]}: {count} of {len(children)}")

        await asyncio.gather(*(one(child) for child in children))
        summary = f"{LABELS[act]}: {len(done)} done, {len(skipped)} already in that state"
        if failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items()))
            raise HypervisorFailure(f"{summary}, {len(failed)} failed ({details})")
        return summary + "."

    op_id = await ctx.operations.start(
        "mass_power",
        work,
        vm_id=initial.id,
        hold=[child.id for child in children],
        hypervisor_id=initial.hypervisor_id,
        params={"action": act},
        created_by=actor,
        message=f"{LABELS[act]} for the VDI machines of {initial.name}",
    )
    await ctx.audit.record("vm_mass_power", actor=actor, target=initial.name, power=act, count=len(children))
    return op_id
