"""Moving VDI machines between image versions: one desktop as it comes back, or all idle ones now.

A machine moves by getting its overlay recreated on the target version while its
domain is off (what was written in it is discarded, as at any reset of a pooled
desktop). The file is replaced first and the row updated after; a stop in between
leaves a row naming the version it left, which is why deleting a version first asks
every machine's disk what it really reads (:mod:`app.vms.versions_admin`).

Never under a user: the broker moves a desktop only once its lease ended (it stays
assigned until the move is done, so nobody gets it meanwhile), or when it hands a
desktop to a new user before they see it; the roll-out of idle machines skips
every machine assigned to someone and holds the others so that none is handed
out while it moves.
"""

from __future__ import annotations

import asyncio
import logging

from app.hyper import Hypervisor, HypervisorError
from app.i18n import gettext as _
from app.i18n import ngettext
from app.i18n.messages import M_, Message, Mn_
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.disks import create_overlays
from app.vms.errors import HypervisorFailure, Refused
from app.vms.operations import OperationContext
from app.vms.power import RUNNING, force_off, start, start_together
from app.vms.publish import initial_checks, state_of
from app.vms.records import Vm, vms_by_ids
from app.vms.versions import ImageState, ImageVersion, set_child_versions

log = logging.getLogger("kvmvdi.vms.rollout")


async def rebase(
    ctx: VmContext, hv: Hypervisor, children: list[Vm], version: ImageVersion, initial: Vm
) -> None:
    """Recreate the overlays of stopped ``children`` on ``version`` (one command), give them a
    fresh copy of the initial's UEFI variable store and TPM state (as populate does), then
    record it."""
    await create_overlays(hv, version.path, [child.disk_path for child in children])
    await firmware_state.copy_state(hv, initial, [child.name for child in children])
    await set_child_versions(ctx.db, [child.id for child in children], version.id)


async def publish_state(ctx: VmContext, initial_id: int, moved: list[Vm]) -> None:
    state = await state_of(ctx, initial_id)
    ctx.hub.publish("image", state.summary())
    for vm in await vms_by_ids(ctx.db, [child.id for child in moved]):
        ctx.publish_vm(vm, "image")
    await ctx.refresh(initial_id, "image")


async def move_desktop(ctx: VmContext, vm_id: int, *, actor: str = "") -> bool:
    """Move one VDI desktop that nobody uses onto its initial's target version, if it is behind.

    Forced off when running and started again afterwards (a fresh boot on the new
    version); True when it moved. A machine held by an operation (a roll-out, a
    populate) is left to it.
    """
    vm = await ctx.vm(vm_id)
    if vm.kind != "vdi" or vm.parent_id is None or vm.operation_id is not None:
        return False
    state = await state_of(ctx, vm.parent_id)
    target = state.target
    if target is None or not state.behind(vm):
        return False
    hv = ctx.hypervisor(vm.hypervisor_id)
    async with ctx.overlay_lock(vm.id):
        try:
            was_running = await force_off(hv, vm)
        except HypervisorError as exc:
            raise HypervisorFailure(
                _("forcing {name} off failed: {reason}").format(name=vm.name, reason=exc)
            ) from exc
        await rebase(ctx, hv, [vm], target, state.initial)
    if was_running:
        await start(ctx, await ctx.vm(vm.id), hv)
    await ctx.audit.record("image_move", actor=actor, target=vm.name, version=target.label)
    await publish_state(ctx, state.initial.id, [vm])
    return True


async def start_rollout(ctx: VmContext, initial_id: int, *, actor: str = "") -> int:
    """Move every idle VDI machine (no user, no operation) that is behind onto the target now."""
    state = await state_of(ctx, initial_id)
    initial = state.initial
    initial_checks(initial, _("roll out its image"))
    target = state.target
    if target is None:
        raise Refused(
            _("{name} has no published version yet: publish one first").format(name=initial.name),
            code="no_version",
        )
    behind = [child for child in state.children if state.behind(child)]
    idle = [child for child in behind if child.assigned_user_id is None and child.operation_id is None]
    if not idle:
        held = len(behind) - len(idle)
        text = (
            ngettext(
                "no idle VDI machine of {name} is behind {version}"
                " ({held} in use or busy: it moves when returned)",
                "no idle VDI machine of {name} is behind {version}"
                " ({held} in use or busy: they move when returned)",
                held,
            )
            if held
            else _("no idle VDI machine of {name} is behind {version}")
        )
        raise Refused(text.format(name=initial.name, version=target.label, held=held), code="nothing_to_do")
    hv = ctx.hypervisor(initial.hypervisor_id)

    async def work(op: OperationContext) -> Message:
        return await Rollout(ctx, op, hv, state, target).run([child.id for child in idle])

    op_id = await ctx.operations.start(
        "rollout",
        work,
        vm_id=initial.id,
        hold=[child.id for child in idle],
        hypervisor_id=hv.id,
        params={"version": target.number, "children": [child.name for child in idle]},
        created_by=actor,
        message=Mn_(
            "Moving {count} idle VDI machine of {name} to {version}",
            "Moving {count} idle VDI machines of {name} to {version}",
            len(idle),
            count=len(idle),
            name=initial.name,
            version=target.label,
        ),
    )
    await ctx.audit.record(
        "image_rollout", actor=actor, target=initial.name, version=target.label, count=len(idle)
    )
    return op_id


class Rollout:
    def __init__(
        self, ctx: VmContext, op: OperationContext, hv: Hypervisor, state: ImageState, target: ImageVersion
    ) -> None:
        self.ctx, self.op, self.hv, self.state, self.target = ctx, op, hv, state, target

    async def run(self, vm_ids: list[int]) -> Message:
        ctx, op, hv, target = self.ctx, self.op, self.hv, self.target
        # Held now, so nobody can be given one of them; one given out just before is left alone.
        fresh = await vms_by_ids(ctx.db, vm_ids)
        taken = [vm for vm in fresh if vm.assigned_user_id is not None]
        if taken:
            await op.release([vm.id for vm in taken])
        moving = [vm for vm in fresh if vm.assigned_user_id is None]
        total = len(moving)
        await op.progress(
            0,
            Mn_(
                "Stopping the running ones of {count} VDI machine",
                "Stopping the running ones of {count} VDI machines",
                total,
                count=total,
            ),
        )
        try:
            running = {d.name for d in await hv.list_domains() if d.state in RUNNING}
        except HypervisorError as exc:
            raise HypervisorFailure(
                _("listing the hypervisor's domains failed: {reason}").format(reason=exc)
            ) from exc
        was_running = [vm for vm in moving if vm.name in running]
        await asyncio.gather(*(force_off(hv, vm) for vm in was_running))
        await op.progress(
            30,
            Mn_(
                "Recreating {count} overlay on {version}",
                "Recreating {count} overlays on {version}",
                total,
                count=total,
                version=target.label,
            ),
        )
        await rebase(ctx, hv, moving, target, self.state.initial)
        await publish_state(ctx, self.state.initial.id, moving)
        await op.progress(
            60,
            M_(
                "{count} on {version}; starting the {running} that ran",
                count=total,
                version=target.label,
                running=len(was_running),
            ),
        )
        failed: dict[str, str] = {}
        if was_running:
            count = 0

            async def up(_vm: Vm) -> None:
                nonlocal count
                count += 1
                await op.progress(
                    60 + 40.0 * count / len(was_running),
                    M_("Started {count} of {total}", count=count, total=len(was_running)),
                )

            again = await vms_by_ids(ctx.db, [vm.id for vm in was_running])
            outcome = await start_together(ctx, hv, again, on_up=up)
            failed = outcome.failed
        summary = Mn_(
            "Moved {count} VDI machine of {name} to {version}.",
            "Moved {count} VDI machines of {name} to {version}.",
            total,
            count=total,
            name=self.state.initial.name,
            version=target.label,
        )
        if taken:
            summary += Mn_(
                "{count} was handed out meanwhile: it moves when returned.",
                "{count} were handed out meanwhile: they move when returned.",
                len(taken),
                count=len(taken),
            )
        if failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items()))
            raise HypervisorFailure(
                _("{summary}; starting again failed: {details}").format(
                    summary=summary.text().rstrip("."), details=details
                )
            )
        return summary
