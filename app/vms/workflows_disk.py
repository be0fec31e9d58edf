"""Disk workflows on initial machines: copy the disk from the source, populate the VDI children.

*Copy disk from source*: the initial's VDI children are forced off and put in
maintenance (their overlays would read a changing base), the source's disk is
converted to a standalone qcow2 under a temporary name with live progress, and
renamed over the initial's disk only when complete.

*Populate*: every child's overlay is recreated from the current initial disk (all
in one SSH command) and each child boots once from its own disk (never volatile,
so first-boot scripts persist), a few at a time; a first boot ends when the guest
powers itself off, or after ``first_boot_timeout`` with an ACPI shutdown, then a
forced power-off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.vms.context import VmContext
from app.vms.disks import backing_file, create_overlays, existing_files, part_path, rename
from app.vms.errors import HypervisorFailure, Invalid, Refused
from app.vms.operations import OperationContext
from app.vms.power import RUNNING, force_off, live_state
from app.vms.records import HypervisorRecord, Vm, children_of, update_vms
from app.vms.volatile import overlay_of, point_definition_at

log = logging.getLogger("kvmvdi.vms.disk")


def _initial_checks(initial: Vm, action: str) -> None:
    if initial.kind != "initial":
        raise Invalid({"vm": f"{initial.name} is not an initial machine"})
    if initial.locked:
        raise Refused(f"{initial.name} is locked: unlock it to {action}", code="locked")
    if initial.operation_id is not None:
        raise Refused(
            f"{initial.name} is busy with operation {initial.operation_id}: wait for it to end", code="busy"
        )


async def _publish_all(ctx: VmContext, vms: list[Vm]) -> None:
    for vm in vms:
        await ctx.refresh(vm.id)


async def start_copy_disk(ctx: VmContext, initial_id: int, *, actor: str = "") -> int:
    initial = await ctx.vm(initial_id)
    _initial_checks(initial, "copy its disk")
    if initial.parent_id is None:
        raise Refused(f"{initial.name} has no source VM to copy from: classify it with a source first")
    source = await ctx.vm(initial.parent_id)
    if source.hypervisor_id != initial.hypervisor_id:
        raise Refused(f"{source.name} and {initial.name} are on different hypervisors: copy within one")
    record, hv = await ctx.usable_hypervisor(initial.hypervisor_id)
    if await live_state(hv, source) in RUNNING:
        raise Refused(
            f"shut down the source {source.name} first: a running disk cannot be copied consistently"
        )
    if await live_state(hv, initial) in RUNNING:
        raise Refused(f"shut down {initial.name} first")
    if not await existing_files(hv, [source.disk_path]):
        raise Refused(f"the source's disk {source.disk_path} does not exist")
    children = await children_of(ctx.db, initial.id)

    async def work(op: OperationContext) -> str:
        return await _copy(ctx, op, record, hv, source, initial, children)

    op_id = await ctx.operations.start(
        "copy_disk",
        work,
        vm_id=initial.id,
        hold=[source.id, *(child.id for child in children)],
        hypervisor_id=record.id,
        params={"source": source.name, "target": initial.disk_path},
        created_by=actor,
        message=f"Copying the disk of {source.name} to {initial.name}",
    )
    await ctx.audit.record("vm_copy_disk", actor=actor, target=initial.name, source=source.name)
    return op_id


async def _copy(
    ctx: VmContext,
    op: OperationContext,
    record: HypervisorRecord,
    hv: Any,
    source: Vm,
    initial: Vm,
    children: list[Vm],
) -> str:
    if children:
        await op.progress(0, f"Stopping {len(children)} VDI machines and putting them in maintenance")
        await update_vms(ctx.db, [child.id for child in children], maintenance=True)
        await _publish_all(ctx, children)
        for child in children:
            await force_off(hv, child)
    temp = part_path(initial.disk_path)
    await op.temp_file(record.id, temp)
    await op.progress(1, f"Copying {source.disk_path}")
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    def report(percent: float) -> None:
        # Called by the hypervisor layer, possibly from another thread.
        def schedule() -> None:
            task = loop.create_task(
                op.progress(1 + 0.98 * float(percent), f"Copying: {float(percent):.0f} %")
            )
            pending.add(task)
            task.add_done_callback(pending.discard)

        loop.call_soon_threadsafe(schedule)

    try:
        await hv.convert_disk(source.disk_path, temp, report)
    except Exception as exc:
        raise HypervisorFailure(f"copying {source.disk_path} failed: {exc}") from exc
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    await op.progress(99, "Renaming into place")
    await rename(hv, temp, initial.disk_path)
    await op.temp_file_done(temp)
    if await backing_file(hv, initial.disk_path) is not None:
        raise HypervisorFailure(f"{initial.disk_path} still depends on a backing file after the copy")
    await op.progress(100, "Disk copied")
    follow = f" Populate its {len(children)} VDI machines to use it." if children else ""
    return f"Copied the disk of {source.name} to {initial.name}.{follow}"


async def start_populate(
    ctx: VmContext, initial_id: int, *, actor: str = "", first_boot_timeout: float | None = None
) -> int:
    initial = await ctx.vm(initial_id)
    _initial_checks(initial, "populate it")
    record, hv = await ctx.usable_hypervisor(initial.hypervisor_id)
    children = await children_of(ctx.db, initial.id)
    if not children:
        raise Refused(f"{initial.name} has no VDI machines to populate: create some first")
    if not await existing_files(hv, [initial.disk_path]):
        raise Refused(f"{initial.name} has no disk yet: copy its disk from the source first", code="no_disk")
    if await live_state(hv, initial) in RUNNING:
        raise Refused(f"shut down {initial.name} first: its disk must not change under the overlays")
    timeout = first_boot_timeout if first_boot_timeout is not None else ctx.settings.first_boot_timeout

    async def work(op: OperationContext) -> str:
        return await _populate(ctx, op, record, hv, initial, children, timeout)

    op_id = await ctx.operations.start(
        "populate",
        work,
        vm_id=initial.id,
        hold=[child.id for child in children],
        hypervisor_id=record.id,
        params={"children": [child.name for child in children], "first_boot_timeout": timeout},
        created_by=actor,
        message=f"Populating {len(children)} VDI machines of {initial.name}",
    )
    await ctx.audit.record("vm_populate", actor=actor, target=initial.name, count=len(children))
    return op_id


async def _populate(
    ctx: VmContext,
    op: OperationContext,
    record: HypervisorRecord,
    hv: Any,
    initial: Vm,
    children: list[Vm],
    first_boot_timeout: float,
) -> str:
    total = len(children)
    await op.progress(0, f"Stopping {total} VDI machines and putting them in maintenance")
    await update_vms(ctx.db, [child.id for child in children], maintenance=True)
    await _publish_all(ctx, children)
    await asyncio.gather(*(force_off(hv, child) for child in children))
    await op.progress(5, f"Recreating {total} overlays of {initial.name}")
    await create_overlays(hv, initial.disk_path, [child.disk_path for child in children])
    await op.progress(10, "First boots")
    limit = asyncio.Semaphore(max(1, ctx.settings.populate_concurrency))
    done: list[Vm] = []
    failed: dict[str, str] = {}
    timed_out: list[str] = []

    async def first_boot(child: Vm) -> None:
        async with limit:
            try:
                if not await _boot_once(ctx, record, hv, child, first_boot_timeout):
                    timed_out.append(child.name)
                done.append(child)
            except Exception as exc:
                log.warning("populate: first boot of %s failed: %s", child.name, exc)
                failed[child.name] = str(exc)
            count = len(done) + len(failed)
            await op.progress(10 + 90.0 * count / total, f"First boots: {count} of {total}")

    await asyncio.gather(*(first_boot(child) for child in children))
    await update_vms(ctx.db, [child.id for child in done], maintenance=False)
    await _publish_all(ctx, done)
    summary = f"Populated {len(done)} of {total} VDI machines of {initial.name}"
    if timed_out:
        summary += f" ({len(timed_out)} did not power off by themselves and were shut down)"
    if failed:
        details = "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items()))
        raise HypervisorFailure(f"{summary}; failed: {details}. Those stay in maintenance.")
    return summary + "."


async def _boot_once(ctx: VmContext, record: HypervisorRecord, hv: Any, child: Vm, within: float) -> bool:
    """Boot ``child`` from its own disk until it powers off; False when it had to be shut down."""
    sync = ctx.waiter()
    async with ctx.overlay_lock(child.id):
        await point_definition_at(hv, child.name, child.disk_path)
        try:
            await hv.start(child.name)
        except Exception as exc:
            raise HypervisorFailure(f"starting {child.name} failed: {exc}") from exc
        stopped = await sync.wait_for(record.id, child.name, ("shutoff", "crashed"), within=within, hv=hv)
        by_itself = stopped is not None
        if not by_itself:
            try:
                await hv.shutdown(child.name)
            except Exception as exc:
                log.info("populate: ACPI shutdown of %s failed: %s", child.name, exc)
            grace = ctx.settings.shutdown_grace
            if (
                await sync.wait_for(record.id, child.name, ("shutoff", "crashed"), within=grace, hv=hv)
                is None
            ):
                await force_off(hv, child)
        if child.volatile:
            await point_definition_at(hv, child.name, overlay_of(child, record))
    return by_itself
