"""Power actions: start, ACPI shutdown, force off, reboot, reset; one VM or all children of an initial.

The lifecycle events, not these functions, write the new state: the hypervisor is
the source of truth and the event path publishes it to browsers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from app.hyper import DomainNotFound, Hypervisor, HypervisorError, HypervisorUnavailable
from app.i18n import N_
from app.i18n import gettext as _
from app.i18n.messages import M_, Message, Mn_
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.errors import HypervisorFailure, Invalid, Refused, domain_missing, refuse_if_busy
from app.vms.operations import OperationContext
from app.vms.records import Vm, children_of
from app.vms.volatile import boot_leftovers, prepare_boot

PowerAction = Literal["start", "shutdown", "poweroff", "reboot", "reset"]
POWER_ACTIONS: tuple[str, ...] = get_args(PowerAction)
LABELS = {
    "start": N_("Start"),
    "shutdown": N_("Shut down (ACPI)"),
    "poweroff": N_("Force off"),
    "reboot": N_("Reboot"),
    "reset": N_("Reset"),
}
log = logging.getLogger("kvmvdi.vms.power")

RUNNING = ("running", "paused", "pmsuspended")
STOPPED = ("shutoff", "crashed")
# Stopping a VM stays possible on a hypervisor in maintenance: that is how it gets drained.
STOPPING = ("shutdown", "poweroff")


def check_action(action: str) -> PowerAction:
    if action not in POWER_ACTIONS:
        raise Invalid({"action": _("choose one of {choices}").format(choices=", ".join(POWER_ACTIONS))})
    return action  # type: ignore[return-value]


async def live_state(hv: Hypervisor, vm: Vm) -> str:
    try:
        return await hv.domain_state(vm.name)
    except DomainNotFound as exc:
        raise domain_missing(vm.name, hv.name) from exc
    except HypervisorError as exc:
        raise HypervisorFailure(
            _("{name}: its domain cannot be read on the hypervisor ({exc})").format(name=vm.name, exc=exc)
        ) from exc


async def power(ctx: VmContext, vm_id: int, action: str, *, actor: str = "", client_address: str = "") -> Vm:
    """Apply ``action`` to one VM (refused while an operation holds it)."""
    act = check_action(action)
    vm = await ctx.vm(vm_id)
    refuse_if_busy(vm.name, vm.operation_id)
    hv = ctx.hypervisor(vm.hypervisor_id, new_work=act not in STOPPING)
    await apply(ctx, vm, hv, act)
    await ctx.audit.record(f"vm_{act}", actor=actor, target=vm.name, client_address=client_address)
    return vm


async def start(
    ctx: VmContext, vm: Vm, hv: Hypervisor, *, paused: bool = False, own_disk: bool = False
) -> None:
    """Start ``vm`` from the file its flags ask for (a fresh per-boot overlay when volatile).

    ``own_disk``: from its own disk whatever its volatile flag (populate's first boot).
    ``paused``: its CPUs wait for a resume (see :func:`start_together`). A paused VM is resumed. A
    persistent VM costs one read of its definition and the start itself; only a
    volatile one is asked for its state first, since its overlay must never be
    recreated under a running guest.
    """
    volatile = vm.volatile and not own_disk
    async with ctx.overlay_lock(vm.id):
        if volatile:
            state = await live_state(hv, vm)
            if state == "paused":
                await _resume(hv, vm)
                return
            if state in RUNNING:
                raise Refused(_("{name} is already running").format(name=vm.name), code="already_running")
        await prepare_boot(vm, hv, volatile=volatile)
        try:
            started = await hv.start(vm.name, paused=paused)
        except HypervisorError as exc:
            await firmware_state.stop_swtpm(hv, vm)
            if volatile:
                await firmware_state.remove(hv, boot_leftovers(vm, hv))
            raise HypervisorFailure(f"starting {vm.name} failed: {exc}") from exc
        if not started and not await _resume(hv, vm):
            raise Refused(_("{name} is already running").format(name=vm.name), code="already_running")


async def _resume(hv: Hypervisor, vm: Vm) -> bool:
    try:
        return await hv.resume(vm.name)
    except HypervisorError as exc:
        raise HypervisorFailure(f"resuming {vm.name} failed: {exc}") from exc


@dataclass
class StartedTogether:
    started: list[Vm] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the hypervisor's connection was lost."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, HypervisorUnavailable):
            return True
        seen = seen.__cause__
    return False


def failure_reason(exc: BaseException, hv: Hypervisor) -> str:
    if connection_lost(exc):
        return (
            f"the connection to {hv.name} was lost (libvirtd restarted, or the network failed) "
            f"and did not come back within {hv.reconnect_window:g} s"
        )
    return str(exc)


async def _start_paused(ctx: VmContext, vm: Vm, hv: Hypervisor, *, own_disk: bool) -> None:
    """Start ``vm`` paused; a start cut off by a lost connection is tried again once the connection
    is back (it may have gone through before the connection broke: then it is up already)."""
    seen = hv.connections
    try:
        await start(ctx, vm, hv, paused=True, own_disk=own_disk)
        return
    except HypervisorFailure as exc:
        if not connection_lost(exc):
            raise
        if not await hv.wait_connection(newer_than=seen, within=hv.reconnect_window):
            raise
    log.warning("connection to %s is back: starting %s again", hv.name, vm.name)
    if await live_state(hv, vm) == "paused":
        return
    await start(ctx, vm, hv, paused=True, own_disk=own_disk)


async def _resume_up(hv: Hypervisor, vm: Vm) -> None:
    """Let a VM set up paused run, through a lost connection that comes back in time."""
    seen = hv.connections
    try:
        await hv.resume(vm.name)
        return
    except HypervisorUnavailable:
        if not await hv.wait_connection(newer_than=seen, within=hv.reconnect_window):
            raise
    # False: the first resume went through before the connection broke.
    await hv.resume(vm.name)


async def start_together(
    ctx: VmContext,
    hv: Hypervisor,
    vms: list[Vm],
    *,
    own_disk: bool = False,
    concurrency: int | None = None,
    on_up: Callable[[Vm], Awaitable[None]] | None = None,
) -> StartedTogether:
    """Start many VMs: each with its CPUs paused (a few at a time), then let them all run.

    A start (qemu and libvirt setting a guest up) competes for the CPU with guests
    already booting; with many guests booting at once each start becomes many times
    slower. Created paused, nothing boots until every VM is up, then all are resumed
    (cheap calls). Already running VMs are skipped; failures are collected per VM.
    ``on_up`` is called for each VM once it is set up (paused, about to run).

    A connection to the hypervisor lost on the way (libvirtd restarted, a network blip) is
    waited for (``hv.reconnect_window``) and the step tried again. A VM that was set up
    but cannot be let run is forced off: no guest stays frozen half-started.
    """
    outcome = StartedTogether()
    limit = asyncio.Semaphore(max(1, concurrency or ctx.settings.power_concurrency))
    up: list[Vm] = []

    async def create(vm: Vm) -> None:
        async with limit:
            try:
                await _start_paused(ctx, vm, hv, own_disk=own_disk)
            except Refused:
                outcome.skipped.append(vm.name)
                return
            except Exception as exc:
                outcome.failed[vm.name] = failure_reason(exc, hv)
                return
            up.append(vm)
        if on_up is not None:
            await on_up(vm)

    async def release(vm: Vm) -> None:
        # Not bounded here: resuming is one quick call (the hypervisor layer bounds the calls).
        try:
            await _resume_up(hv, vm)
        except HypervisorError as exc:
            outcome.failed[vm.name] = f"resuming failed: {failure_reason(exc, hv)}"
            await _undo_paused(hv, [vm])
            return
        outcome.started.append(vm)

    try:
        await asyncio.gather(*(create(vm) for vm in vms))
        await asyncio.gather(*(release(vm) for vm in up))
    except asyncio.CancelledError:
        # Interrupted (the dashboard stops): no guest stays frozen half-started.
        await asyncio.shield(_undo_paused(hv, [vm for vm in up if vm not in outcome.started]))
        raise
    return outcome


async def _undo_paused(hv: Hypervisor, vms: list[Vm]) -> None:
    for vm in vms:
        try:
            await hv.destroy(vm.name)
        except HypervisorError as exc:
            log.warning("%s stays paused: %s", vm.name, exc)


async def apply(ctx: VmContext, vm: Vm, hv: Hypervisor, action: PowerAction) -> None:
    """Do it; :class:`Refused` when there is nothing to do (already in the wanted state)."""
    if action == "start":
        await start(ctx, vm, hv)
        return
    if await live_state(hv, vm) not in RUNNING:
        raise Refused(_("{name} is not running").format(name=vm.name), code="not_running")
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
            raise HypervisorFailure(
                _("forcing {name} off failed: {exc}").format(name=vm.name, exc=exc)
            ) from exc
    return False


async def stop_gracefully(ctx: VmContext, hv: Hypervisor, vm: Vm) -> bool:
    """ACPI shutdown, forced off after ``shutdown_grace`` seconds; True when it had to be forced."""
    if await live_state(hv, vm) not in RUNNING:
        return False
    try:
        await hv.shutdown(vm.name)
    except HypervisorError as exc:
        log.info("ACPI shutdown of %s failed: %s", vm.name, exc)
    grace = ctx.settings.shutdown_grace
    stopped = await ctx.states.wait_for(hv.id, vm.name, STOPPED, within=grace, hv=hv)
    if stopped is not None:
        return False
    await force_off(hv, vm)
    return True


async def mass_power(ctx: VmContext, initial_id: int, action: str, *, actor: str = "") -> int:
    """The same action on every VDI child of an initial machine, as one operation; its id."""
    act = check_action(action)
    initial = await ctx.vm(initial_id)
    if initial.kind != "initial":
        raise Invalid({"vm": _("{name} is not an initial machine").format(name=initial.name)})
    children = await children_of(ctx.db, initial.id)
    if not children:
        raise Refused(_("{name} has no VDI machines yet").format(name=initial.name))
    hv = ctx.hypervisor(initial.hypervisor_id, new_work=act not in STOPPING)

    async def work(op: OperationContext) -> Message:
        total = len(children)
        if act == "start":
            count = 0

            async def up(_vm: Vm) -> None:
                nonlocal count
                count += 1
                await op.progress(
                    99.0 * count / total,
                    M_("Set up {count} of {total}; they run once all are up", count=count, total=total),
                )

            await op.progress(
                0, Mn_("Starting {count} VDI machine", "Starting {count} VDI machines", total, count=total)
            )
            outcome = await start_together(ctx, hv, children, on_up=up)
            done, skipped, failed = [vm.name for vm in outcome.started], outcome.skipped, outcome.failed
        else:
            done, skipped, failed = await _each(ctx, op, hv, children, act)
        summary = M_(
            "{action}: {done} done, {skipped} already in that state.",
            action=M_(LABELS[act]),
            done=len(done),
            skipped=len(skipped),
        )
        if failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items()))
            raise HypervisorFailure(f"{summary.text().rstrip('.')}, {len(failed)} failed ({details})")
        return summary

    op_id = await ctx.operations.start(
        "mass_power",
        work,
        vm_id=initial.id,
        hold=[child.id for child in children],
        hypervisor_id=initial.hypervisor_id,
        params={"action": act},
        created_by=actor,
        message=M_("{action} for the VDI machines of {name}", action=M_(LABELS[act]), name=initial.name),
    )
    await ctx.audit.record("vm_mass_power", actor=actor, target=initial.name, power=act, count=len(children))
    return op_id


async def _each(
    ctx: VmContext, op: OperationContext, hv: Hypervisor, vms: list[Vm], act: PowerAction
) -> tuple[list[str], list[str], dict[str, str]]:
    """``act`` on each VM, a few at a time: (done, skipped, failed)."""
    limit = asyncio.Semaphore(max(1, ctx.settings.power_concurrency))
    done: list[str] = []
    skipped: list[str] = []
    failed: dict[str, str] = {}

    async def one(vm: Vm) -> None:
        async with limit:
            try:
                await apply(ctx, vm, hv, act)
                done.append(vm.name)
            except Refused:
                skipped.append(vm.name)
            except Exception as exc:
                failed[vm.name] = str(exc)
            count = len(done) + len(skipped) + len(failed)
            await op.progress(
                100.0 * count / len(vms),
                M_("{action}: {count} of {total}", action=M_(LABELS[act]), count=count, total=len(vms)),
            )

    await asyncio.gather(*(one(vm) for vm in vms))
    return done, skipped, failed
