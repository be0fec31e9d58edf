"""Actions on many VMs chosen in the VM table: power, maintenance, delete.

A selection may span hypervisors and kinds. Power actions run as one operation
(live progress) over the VMs no other operation holds: starts go hypervisor by
hypervisor through :func:`app.vms.power.start_together` (set up paused, then all
run), stops and the rest a few at a time. Deleting is planned first, like a
single deletion: the plan names every VM and file (one plan per VM chosen, or per
initial machine with all its VDI machines chosen), says which chosen VMs are not
deleted and why, and the deletion runs only if the admin confirmed exactly that.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.hyper import HypervisorError
from app.i18n import gettext as _
from app.i18n.messages import M_, Message, Mn_
from app.vms.context import VmContext
from app.vms.errors import HypervisorFailure, Invalid, Refused, VmError
from app.vms.operations import OperationContext
from app.vms.power import LABELS, STOPPING, PowerAction, apply, check_action, start_together
from app.vms.records import Vm, children_of, update_vms, vms_by_ids
from app.vms.workflows_manage import DeletePlan, delete, plan_delete

log = logging.getLogger("kvmvdi.vms.bulk")

# A selection is at most this many VMs (twice the largest fleet the table is made for; a bulk
# deletion's confirmation of that many names and files still fits a request body).
MAX_SELECTION = 2000


async def _chosen(ctx: VmContext, vm_ids: Iterable[int]) -> list[Vm]:
    wanted = sorted(set(vm_ids))
    if not wanted:
        raise Invalid({"vm_ids": _("choose at least one VM")})
    if len(wanted) > MAX_SELECTION:
        raise Invalid({"vm_ids": _("at most {count} VMs at once").format(count=MAX_SELECTION)})
    found = await vms_by_ids(ctx.db, wanted)
    if not found:
        raise Refused(_("none of the chosen VMs exists any more"), code="not_found")
    return found


@dataclass
class Tally:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.done) + len(self.skipped) + len(self.failed)


async def start_bulk_power(ctx: VmContext, vm_ids: Iterable[int], action: str, *, actor: str = "") -> int:
    """``action`` on every chosen VM as one operation; its id. Busy VMs are left out and named."""
    act = check_action(action)
    chosen = await _chosen(ctx, vm_ids)
    busy = [vm.name for vm in chosen if vm.operation_id is not None]
    free = [vm for vm in chosen if vm.operation_id is None]
    if not free:
        raise Refused(
            _("every chosen VM is busy with an operation: {names}").format(names=", ".join(busy)), code="busy"
        )
    label = LABELS[act]

    async def work(op: OperationContext) -> Message:
        tally = await _power_all(ctx, op, free, act)
        for vm in free:
            await ctx.audit.record(f"vm_{act}", actor=actor, target=vm.name, bulk_operation=op.id)
        counts = {"action": M_(label), "done": len(tally.done), "skipped": len(tally.skipped)}
        if busy:
            summary = M_(
                "{action}: {done} done, {skipped} already in that state, {left} left out (busy: {names}).",
                **counts,
                left=len(busy),
                names=", ".join(busy),
            )
        else:
            summary = M_("{action}: {done} done, {skipped} already in that state.", **counts)
        if tally.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in sorted(tally.failed.items()))
            raise HypervisorFailure(f"{summary.text().rstrip('.')}, {len(tally.failed)} failed ({details})")
        return summary

    return await ctx.operations.start(
        "bulk_power",
        work,
        hold=[vm.id for vm in free],
        params={"action": act, "vms": [vm.name for vm in free], "left_out": busy},
        created_by=actor,
        message=Mn_(
            "{action} for {count} VM",
            "{action} for {count} VMs",
            len(free),
            action=M_(label),
            count=len(free),
        ),
    )


async def _power_all(ctx: VmContext, op: OperationContext, vms: list[Vm], act: PowerAction) -> Tally:
    tally = Tally()
    total = len(vms)
    by_host: dict[int, list[Vm]] = defaultdict(list)
    for vm in vms:
        by_host[vm.hypervisor_id].append(vm)

    async def counted() -> None:
        await op.progress(
            100.0 * tally.count / total,
            M_("{action}: {count} of {total}", action=M_(LABELS[act]), count=tally.count, total=total),
        )

    async def on_host(hypervisor_id: int, members: list[Vm]) -> None:
        try:
            hv = ctx.hypervisor(hypervisor_id, new_work=act not in STOPPING)
        except VmError as exc:
            tally.failed.update((vm.name, exc.message) for vm in members)
            await counted()
            return
        if act == "start":
            outcome = await start_together(ctx, hv, members)
            tally.done += [vm.name for vm in outcome.started]
            tally.skipped += outcome.skipped
            tally.failed.update(outcome.failed)
            await counted()
            return
        limit = asyncio.Semaphore(max(1, ctx.settings.power_concurrency))

        async def one(vm: Vm) -> None:
            async with limit:
                try:
                    await apply(ctx, vm, hv, act)
                    tally.done.append(vm.name)
                except Refused:
                    tally.skipped.append(vm.name)
                except (VmError, HypervisorError) as exc:
                    tally.failed[vm.name] = str(exc)
                await counted()

        await asyncio.gather(*(one(vm) for vm in members))

    await op.progress(
        0,
        M_(
            "{action}: {vms} on {hypervisors}",
            action=M_(LABELS[act]),
            vms=Mn_("{count} VM", "{count} VMs", total, count=total),
            hypervisors=Mn_("{count} hypervisor", "{count} hypervisors", len(by_host), count=len(by_host)),
        ),
    )
    await asyncio.gather(*(on_host(hv_id, members) for hv_id, members in by_host.items()))
    return tally


async def set_bulk_maintenance(
    ctx: VmContext, vm_ids: Iterable[int], maintenance: bool, *, actor: str = "", client_address: str = ""
) -> list[Vm]:
    """Put the chosen VMs into (or out of) maintenance: one write, one audit entry and message each."""
    chosen = await _chosen(ctx, vm_ids)
    changing = [vm for vm in chosen if vm.maintenance != maintenance]
    await update_vms(ctx.db, [vm.id for vm in changing], maintenance=maintenance)
    for vm in changing:
        await ctx.audit.record(
            "vm_flags", actor=actor, target=vm.name, client_address=client_address, maintenance=maintenance
        )
    updated = await vms_by_ids(ctx.db, [vm.id for vm in changing])
    for vm in updated:
        ctx.publish_vm(vm, "flags")
    return updated


@dataclass(frozen=True)
class BulkDeletePlan:
    """One plan per VM (or initial machine with its VDI machines) to delete, and what is refused."""

    plans: list[tuple[Vm, bool, DeletePlan]]  # (VM the plan starts from, with its children, plan)
    refused: dict[str, str]

    @property
    def names(self) -> list[str]:
        return [name for _, _, plan in self.plans for name in plan.names]

    @property
    def files(self) -> list[str]:
        return [path for _, _, plan in self.plans for path in plan.files]

    def summary(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for _vm, _row, plan in self.plans:
            for key, value in plan.summary().items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
        merged.setdefault("vms", [])
        merged.setdefault("files", [])
        merged.setdefault("kept_files", [])
        # A disk kept for one plan because another chosen VM used it is removed with that one.
        merged["kept_files"] = sorted(set(merged["kept_files"]) - set(merged["files"]))
        merged["refused"] = [
            {"name": name, "reason": reason} for name, reason in sorted(self.refused.items())
        ]
        return merged


async def plan_bulk_delete(ctx: VmContext, vm_ids: Iterable[int], *, remove_disks: bool) -> BulkDeletePlan:
    chosen = await _chosen(ctx, vm_ids)
    ids = {vm.id for vm in chosen}
    refused: dict[str, str] = {}
    plans: list[tuple[Vm, bool, DeletePlan]] = []
    # Children go with their initial machine when it is chosen too; initials are planned last.
    roots = [vm for vm in chosen if not (vm.kind == "vdi" and vm.parent_id in ids)]
    roots.sort(key=lambda vm: vm.kind == "initial")
    for vm in roots:
        with_children = False
        if vm.kind == "initial":
            children = await children_of(ctx.db, vm.id)
            unchosen = [child.name for child in children if child.id not in ids]
            if unchosen:
                refused[vm.name] = (
                    f"{len(unchosen)} of its {len(children)} VDI machines are not chosen: choose them too,"
                    " or delete it on its own"
                )
                continue
            with_children = bool(children)
        try:
            plan = await plan_delete(ctx, vm.id, with_children=with_children, remove_disks=remove_disks)
        except VmError as exc:
            refused[vm.name] = exc.message
            continue
        plans.append((vm, with_children, plan))
    return BulkDeletePlan(plans=plans, refused=refused)


async def start_bulk_delete(
    ctx: VmContext,
    vm_ids: Iterable[int],
    *,
    remove_disks: bool,
    confirmed_vms: list[str],
    confirmed_files: list[str],
    actor: str = "",
    client_address: str = "",
) -> tuple[BulkDeletePlan, int]:
    """Delete what the plan names, if the admin confirmed exactly that; (plan, operation id)."""
    plan = await plan_bulk_delete(ctx, vm_ids, remove_disks=remove_disks)
    if not plan.plans:
        reasons = "; ".join(f"{name}: {why}" for name, why in sorted(plan.refused.items()))
        raise Refused(_("nothing to delete ({reasons})").format(reasons=reasons), code="nothing_to_do")
    if sorted(confirmed_vms) != sorted(plan.names):
        raise Invalid(
            {"confirm_vms": _("confirm the exact list of VMs to delete (it changed or is missing)")}
        )
    if sorted(confirmed_files) != sorted(plan.files):
        raise Invalid(
            {"confirm_files": _("confirm the exact list of files to remove (it changed or is missing)")}
        )

    async def work(op: OperationContext) -> Message:
        deleted: list[str] = []
        failed: dict[str, str] = {}
        for index, (root, with_children, part) in enumerate(plan.plans, start=1):
            try:
                _deleted, child_op = await delete(
                    ctx,
                    root.id,
                    with_children=with_children,
                    remove_disks=remove_disks,
                    confirmed_vms=part.names,
                    confirmed_files=part.files,
                    actor=actor,
                    client_address=client_address,
                )
                if child_op is not None:
                    finished = await ctx.operations.wait(child_op)
                    if finished.state != "succeeded":
                        raise HypervisorFailure(finished.error or finished.message)
                deleted += part.names
            except VmError as exc:
                failed[root.name] = exc.message
            await op.progress(
                100.0 * index / len(plan.plans),
                M_("Deleted {index} of {total}", index=len(deleted), total=len(plan.names)),
            )
        summary = Mn_("Deleted {count} VM.", "Deleted {count} VMs.", len(deleted), count=len(deleted))
        if failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items()))
            raise HypervisorFailure(
                _("{summary}; not deleted: {details}").format(
                    summary=summary.text().rstrip("."), details=details
                )
            )
        return summary

    op_id = await ctx.operations.start(
        "bulk_delete",
        work,
        params={"vms": plan.names, "files": plan.files},
        created_by=actor,
        message=Mn_("Deleting {count} VM", "Deleting {count} VMs", len(plan.names), count=len(plan.names)),
    )
    return plan, op_id
