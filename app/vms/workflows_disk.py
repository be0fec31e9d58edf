"""Disk workflows on initial machines: copy the disk from the source, populate the VDI children.

*Copy disk from source*: the initial's VDI children are forced off and put in
maintenance (their overlays would read a changing base), the source's disk is
converted to a standalone qcow2 under a temporary name with live progress, and
renamed over the initial's disk only when complete.

*Populate*: every child's overlay is recreated from the current initial disk, and
its UEFI variable store and TPM state from the initial's (one SSH command each),
then each child is started once from its own disk, never volatile, so that
first-boot scripts persist (a few starts at a time). The
operation is done when every child has been recreated and started: the first
boots run on. On request it also waits until each first boot has finished (the
guest powers itself off), shutting down (ACPI, then forced) a guest that is still
running after ``first_boot_timeout``. A volatile child's flag applies from its
next start.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath

from app.hyper import Hypervisor, HypervisorError
from app.hyper.disks import partial_path
from app.i18n import gettext as _
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.disks import backing_file, confined, create_overlays, existing_files, no_space
from app.vms.errors import HypervisorFailure, Invalid, Refused
from app.vms.operations import OperationContext
from app.vms.power import RUNNING, force_off, live_state, start_together
from app.vms.records import Vm, children_of, update_vms, vms_by_ids

log = logging.getLogger("kvmvdi.vms.disk")

STOPPED = ("shutoff", "crashed")


def _initial_checks(initial: Vm, action: str) -> None:
    if initial.kind != "initial":
        raise Invalid({"vm": f"{initial.name} is not an initial machine"})
    if initial.locked:
        raise Refused(
            _("{name} is locked: unlock it to {action}").format(name=initial.name, action=action),
            code="locked",
        )
    if initial.operation_id is not None:
        raise Refused(
            _("{name} is busy with operation {operation_id}: wait for it to end").format(
                name=initial.name, operation_id=initial.operation_id
            ),
            code="busy",
        )


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


# -- copy disk -----------------------------------------------------------------------------------


async def start_copy_disk(ctx: VmContext, initial_id: int, *, actor: str = "") -> int:
    initial = await ctx.vm(initial_id)
    _initial_checks(initial, "copy its disk")
    if initial.parent_id is None:
        raise Refused(
            _("{name} has no source VM to copy from: classify it with a source first").format(
                name=initial.name
            )
        )
    source = await ctx.vm(initial.parent_id)
    if source.hypervisor_id != initial.hypervisor_id:
        raise Refused(
            _("{source} and {initial} are on different hypervisors: copy within one").format(
                source=source.name, initial=initial.name
            )
        )
    hv = ctx.hypervisor(initial.hypervisor_id)
    confined(hv, [source.disk_path, initial.disk_path])
    if await live_state(hv, source) in RUNNING:
        raise Refused(
            _("shut down the source {name} first: a running disk cannot be copied consistently").format(
                name=source.name
            )
        )
    if await live_state(hv, initial) in RUNNING:
        raise Refused(_("shut down {name} first").format(name=initial.name))
    if not await existing_files(hv, [source.disk_path]):
        raise Refused(_("the source's disk {disk_path} does not exist").format(disk_path=source.disk_path))
    children = await children_of(ctx.db, initial.id)

    async def work(op: OperationContext) -> str:
        return await _copy(ctx, op, hv, source, initial, children)

    op_id = await ctx.operations.start(
        "copy_disk",
        work,
        vm_id=initial.id,
        hold=[source.id, *(child.id for child in children)],
        hypervisor_id=hv.id,
        params={"source": source.name, "target": initial.disk_path},
        created_by=actor,
        message=_("Copying the disk of {source} to {initial}").format(
            source=source.name, initial=initial.name
        ),
    )
    await ctx.audit.record("vm_copy_disk", actor=actor, target=initial.name, source=source.name)
    return op_id


async def _copy(
    ctx: VmContext, op: OperationContext, hv: Hypervisor, source: Vm, initial: Vm, children: list[Vm]
) -> str:
    if children:
        await op.progress(0, f"Stopping {len(children)} VDI machines and putting them in maintenance")
        await update_vms(ctx.db, [child.id for child in children], maintenance=True)
        await _publish_all(ctx, children)
        await _stop_running(hv, children)
    # The hypervisor layer writes here and renames at the end; recorded first, so that
    # a dashboard that dies meanwhile still knows what to clean up.
    tag = f"op{op.id}"
    temp = partial_path(initial.disk_path, tag)
    await op.temp_file(hv.id, temp)
    await op.progress(1, f"Copying {source.disk_path}")

    async def report(percent: float) -> None:
        await op.progress(1 + 0.98 * percent, f"Copying: {percent:.0f} %")

    try:
        await hv.convert_disk(
            source.disk_path,
            initial.disk_path,
            report,
            op_id=tag,
            src_format=source.disk_format,
            replace=True,
        )
    except HypervisorError as exc:
        what = f"copying {source.disk_path} to {initial.name}"
        if (full := await no_space(hv, exc, posixpath.dirname(initial.disk_path), what)) is not None:
            raise full from exc
        raise HypervisorFailure(f"copying {source.disk_path} failed: {exc}") from exc
    await op.temp_file_done(temp)
    if await backing_file(hv, initial.disk_path) is not None:
        raise HypervisorFailure(
            _("{disk_path} still depends on a backing file after the copy").format(
                disk_path=initial.disk_path
            )
        )
    if source.firmware == initial.firmware and source.tpm == initial.tpm:
        # The variable store (boot entries, enrolled keys) and the TPM belong with the disk.
        await firmware_state.copy_state(hv, source, [initial.name])
    await op.progress(100, "Disk copied")
    follow = f" Populate its {len(children)} VDI machines to use it." if children else ""
    return f"Copied the disk of {source.name} to {initial.name}.{follow}"


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
    _initial_checks(initial, "populate it")
    hv = ctx.hypervisor(initial.hypervisor_id)
    children = await children_of(ctx.db, initial.id)
    if not children:
        raise Refused(
            _("{name} has no VDI machines to populate: create some first").format(name=initial.name)
        )
    if not await existing_files(hv, [initial.disk_path]):
        raise Refused(
            _("{name} has no disk yet: copy its disk from the source first").format(name=initial.name),
            code="no_disk",
        )
    if await live_state(hv, initial) in RUNNING:
        raise Refused(
            _("shut down {name} first: its disk must not change under the overlays").format(name=initial.name)
        )
    timeout = first_boot_timeout if first_boot_timeout is not None else ctx.settings.first_boot_timeout

    async def work(op: OperationContext) -> str:
        populate = Populate(ctx, op, hv, initial, children)
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
        message=_("Populating {count} VDI machines of {name}").format(count=len(children), name=initial.name),
    )
    await ctx.audit.record(
        "vm_populate", actor=actor, target=initial.name, count=len(children), wait_first_boot=wait_first_boot
    )
    return op_id


class Populate:
    """One populate run; progress counts overlays recreated, VMs started (and first boots ended)."""

    def __init__(
        self, ctx: VmContext, op: OperationContext, hv: Hypervisor, initial: Vm, children: list[Vm]
    ) -> None:
        self.ctx = ctx
        self.op = op
        self.hv = hv
        self.initial = initial
        self.children = children
        self.steps = 0
        self.total_steps = 1
        self.started: list[Vm] = []
        self.failed: dict[str, str] = {}
        self.shut_down: list[str] = []
        self.ended = 0

    async def advance(self, message: str, steps: int = 1) -> None:
        self.steps += steps
        await self.op.progress(100.0 * self.steps / self.total_steps, message)

    async def run(self, *, wait_first_boot: bool, first_boot_timeout: float) -> str:
        ctx, hv, children = self.ctx, self.hv, self.children
        total = len(children)
        self.total_steps = total * (3 if wait_first_boot else 2)
        # Flags an admin set stay; only the maintenance this run sets is lifted again.
        ours = [child.id for child in children if not child.maintenance]
        await self.op.progress(0, f"Stopping {total} VDI machines and putting them in maintenance")
        await update_vms(ctx.db, ours, maintenance=True)
        await _publish_all(ctx, children)
        await _stop_running(hv, children)
        await self.op.progress(None, f"Recreating {total} overlays of {self.initial.name}")
        await create_overlays(hv, self.initial.disk_path, [child.disk_path for child in children])
        await firmware_state.copy_state(hv, self.initial, [child.name for child in children])
        await self.advance(f"Recreated {total} overlays; starting the first boots", total)

        count = 0

        async def up(_child: Vm) -> None:
            nonlocal count
            count += 1
            await self.advance(f"Set up {count} of {total} first boots; they run once all are up")

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
            await self.op.progress(None, f"Waiting for {len(self.started)} first boots to finish")
            await asyncio.gather(*(self.wait_for_end(child, first_boot_timeout) for child in self.started))
        finished = {child.name for child in self.started}
        await update_vms(ctx.db, [child.id for child in self.started if child.id in ours], maintenance=False)
        await _publish_all(ctx, self.started)
        summary = f"Populated {len(finished)} of {total} VDI machines of {self.initial.name}"
        if wait_first_boot:
            summary += ": first boots finished"
            if self.shut_down:
                summary += (
                    f" ({len(self.shut_down)} still running after {first_boot_timeout:g} s"
                    f" and shut down: {', '.join(sorted(self.shut_down))})"
                )
        else:
            summary += ": overlays recreated, first boots under way"
        if self.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in sorted(self.failed.items()))
            raise HypervisorFailure(
                _("{summary}; failed: {details}. Those stay in maintenance.").format(
                    summary=summary, details=details
                )
            )
        return summary + "."

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
        await self.advance(f"First boots finished: {self.ended} of {len(self.children)}")
