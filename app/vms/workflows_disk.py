"""Populating an initial's VDI children (publishing image versions is :mod:`app.vms.publish`).

*Populate*: every child's overlay is recreated on the initial's target version (on
its own disk if it has none yet, as before versions existed), all in one SSH
command, and its UEFI variable store and TPM state from the initial's (one SSH
command each), then each child is started once from its own disk, never
volatile, so that first-boot scripts persist (a few starts at a time). The
operation is done when every child has been recreated and started: the first
boots run on. On request it also waits until each first boot has finished (the
guest powers itself off), shutting down (ACPI, then forced) a guest that is still
running after ``first_boot_timeout``. A volatile child's flag applies from its
next start.
"""

from __future__ import annotations

import asyncio
import logging

from app.hyper import Hypervisor, HypervisorError
from app.i18n import gettext as _
from app.i18n.messages import M_, Message, Mn_
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.disks import create_overlays, existing_files
from app.vms.errors import HypervisorFailure, Refused
from app.vms.operations import OperationContext
from app.vms.power import RUNNING, force_off, live_state, start_together
from app.vms.publish import initial_checks, state_of
from app.vms.records import Vm, update_vms, vms_by_ids
from app.vms.rollout import rebase
from app.vms.versions import ImageVersion

log = logging.getLogger("kvmvdi.vms.disk")

STOPPED = ("shutoff", "crashed")


async def _publish_all(ctx: VmContext, vms: list[Vm]) -> None:
    # One query for all: during a boot storm every database round trip is slow.
    for vm in await vms_by_ids(ctx.db, [vm.id for vm in vms]):
        ctx.publish_vm(vm)


async def _stop_running(hv: Hypervisor, vms: list[Vm]) -> None:
    """Force off those of ``vms`` that run: one listing, then a destroy per running one."""
    try:
        running = {domain.name for domain in await hv.list_domains() if domain.state in RUNNING}
    except HypervisorError as exc:
        raise HypervisorFailure(_("listing the hypervisor's domains failed: {exc}").format(exc=exc)) from exc
    await asyncio.gather(*(force_off(hv, vm) for vm in vms if vm.name in running))


# -- populate -----------------------------------------------------------------------------------


async def start_populate(
    ctx: VmContext,
    initial_id: int,
    *,
    actor: str = "",
    wait_first_boot: bool = False,
    first_boot_timeout: float | None = None,
) -> int:
    initial = await ctx.vm(initial_id)
    initial_checks(initial, _("populate it"))
    hv = ctx.hypervisor(initial.hypervisor_id)
    state = await state_of(ctx, initial.id)
    children = state.children
    if not children:
        raise Refused(
            _("{name} has no VDI machines to populate: create some first").format(name=initial.name)
        )
    target = state.target
    base = target.path if target is not None else initial.disk_path
    if not await existing_files(hv, [base]):
        raise Refused(
            _("{name} has no disk yet: publish a version from the source first").format(name=initial.name),
            code="no_disk",
        )
    if target is None and await live_state(hv, initial) in RUNNING:
        raise Refused(
            _("shut down {name} first: its disk must not change under the overlays").format(name=initial.name)
        )
    timeout = first_boot_timeout if first_boot_timeout is not None else ctx.settings.first_boot_timeout

    async def work(op: OperationContext) -> Message:
        populate = Populate(ctx, op, hv, initial, children, target)
        return await populate.run(wait_first_boot=wait_first_boot, first_boot_timeout=timeout)

    params: dict[str, object] = {"children": [child.name for child in children], "wait_first_boot": False}
    if wait_first_boot:
        params.update(wait_first_boot=True, first_boot_timeout=timeout)
    op_id = await ctx.operations.start(
        "populate",
        work,
        vm_id=initial.id,
        hold=[child.id for child in children],
        hypervisor_id=hv.id,
        params=params,
        created_by=actor,
        message=Mn_(
            "Populating {count} VDI machine of {name}",
            "Populating {count} VDI machines of {name}",
            len(children),
            count=len(children),
            name=initial.name,
        ),
    )
    await ctx.audit.record(
        "vm_populate", actor=actor, target=initial.name, count=len(children), wait_first_boot=wait_first_boot
    )
    return op_id


class Populate:
    """One populate run; progress counts overlays recreated, VMs started (and first boots ended)."""

    def __init__(
        self,
        ctx: VmContext,
        op: OperationContext,
        hv: Hypervisor,
        initial: Vm,
        children: list[Vm],
        target: ImageVersion | None,
    ) -> None:
        self.ctx = ctx
        self.op = op
        self.hv = hv
        self.initial = initial
        self.children = children
        self.target = target
        self.steps = 0
        self.total_steps = 1
        self.started: list[Vm] = []
        self.failed: dict[str, str] = {}
        self.shut_down: list[str] = []
        self.ended = 0

    async def advance(self, message: Message, steps: int = 1) -> None:
        self.steps += steps
        await self.op.progress(100.0 * self.steps / self.total_steps, message)

    async def run(self, *, wait_first_boot: bool, first_boot_timeout: float) -> Message:
        ctx, hv, children = self.ctx, self.hv, self.children
        total = len(children)
        self.total_steps = total * (3 if wait_first_boot else 2)
        # Flags an admin set stay; only the maintenance this run sets is lifted again.
        ours = [child.id for child in children if not child.maintenance]
        await self.op.progress(
            0,
            Mn_(
                "Stopping {count} VDI machine and putting it in maintenance",
                "Stopping {count} VDI machines and putting them in maintenance",
                total,
                count=total,
            ),
        )
        await update_vms(ctx.db, ours, maintenance=True)
        await _publish_all(ctx, children)
        await _stop_running(hv, children)
        if self.target is not None:
            await self.op.progress(
                None,
                Mn_(
                    "Recreating {count} overlay on {version}",
                    "Recreating {count} overlays on {version}",
                    total,
                    count=total,
                    version=self.target.label,
                ),
            )
            await rebase(ctx, hv, children, self.target, self.initial)
            ctx.hub.publish("image", (await state_of(ctx, self.initial.id)).summary())
        else:
            await self.op.progress(
                None,
                Mn_(
                    "Recreating {count} overlay of {name}",
                    "Recreating {count} overlays of {name}",
                    total,
                    count=total,
                    name=self.initial.name,
                ),
            )
            await create_overlays(hv, self.initial.disk_path, [child.disk_path for child in children])
            await firmware_state.copy_state(hv, self.initial, [child.name for child in children])
        await self.advance(
            Mn_(
                "Recreated {count} overlay; starting the first boots",
                "Recreated {count} overlays; starting the first boots",
                total,
                count=total,
            ),
            total,
        )

        count = 0

        async def up(_child: Vm) -> None:
            nonlocal count
            count += 1
            await self.advance(
                M_(
                    "Set up {count} of {total} first boots; they run once all are up",
                    count=count,
                    total=total,
                )
            )

        # Every child is set up with its CPUs paused, then all run (see start_together).
        outcome = await start_together(
            ctx,
            hv,
            children,
            own_disk=True,
            concurrency=ctx.settings.populate_concurrency,
            on_up=up,
        )
        self.started = outcome.started
        self.failed = dict(outcome.failed)
        for name in outcome.skipped:
            self.failed[name] = "it was running again before its first boot"
        if wait_first_boot:
            await self.op.progress(
                None,
                Mn_(
                    "Waiting for {count} first boot to finish",
                    "Waiting for {count} first boots to finish",
                    len(self.started),
                    count=len(self.started),
                ),
            )
            await asyncio.gather(*(self.wait_for_end(child, first_boot_timeout) for child in self.started))
        finished = {child.name for child in self.started}
        await update_vms(ctx.db, [child.id for child in self.started if child.id in ours], maintenance=False)
        await _publish_all(ctx, self.started)
        done = {"done": len(finished), "total": total, "name": self.initial.name}
        if not wait_first_boot:
            summary = M_(
                "Populated {done} of {total} VDI machines of {name}:"
                " overlays recreated, first boots under way.",
                **done,
            )
        elif self.shut_down:
            summary = M_(
                "Populated {done} of {total} VDI machines of {name}: first boots finished"
                " ({count} still running after {seconds} s and shut down: {names}).",
                **done,
                count=len(self.shut_down),
                seconds=format(first_boot_timeout, "g"),
                names=", ".join(sorted(self.shut_down)),
            )
        else:
            summary = M_("Populated {done} of {total} VDI machines of {name}: first boots finished.", **done)
        if self.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in sorted(self.failed.items()))
            raise HypervisorFailure(
                _("{summary}; failed: {details}. Those stay in maintenance.").format(
                    summary=summary.text().rstrip("."), details=details
                )
            )
        return summary

    async def wait_for_end(self, child: Vm, within: float) -> None:
        """Wait until ``child`` powers itself off; else ACPI shutdown, then force it off."""
        sync = self.ctx.states
        hv = self.hv
        if await sync.wait_for(hv.id, child.name, STOPPED, within=within, hv=hv) is None:
            self.shut_down.append(child.name)
            try:
                await hv.shutdown(child.name)
            except HypervisorError as exc:
                log.info("populate: ACPI shutdown of %s failed: %s", child.name, exc)
            grace = self.ctx.settings.shutdown_grace
            if await sync.wait_for(hv.id, child.name, STOPPED, within=grace, hv=hv) is None:
                await force_off(hv, child)
        self.ended += 1
        await self.advance(
            M_("First boots finished: {count} of {total}", count=self.ended, total=len(self.children))
        )
