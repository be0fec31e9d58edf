"""Snapshots of persistent desktops: take, list, revert and delete (internal qcow2 snapshots).

Offered for simple VMs (and sources, whose golden image an admin may want to try
changes on), never for volatile ones (their changes vanish at power-off anyway) or
VDI machines (their overlay is recreated whenever they move to another image
version, which would silently drop the snapshots). Each change is a short
operation that holds the VM, so no power action or second snapshot runs meanwhile;
taking one of a running VM includes its memory (the guest pauses while it is
written). The list comes from libvirt, the only truth about them; a change is
announced as ``snapshot {vm_id, snapshots}`` to admins and to the desktop's user.
"""

from __future__ import annotations

import re
from typing import Any

from app.clock import utcnow
from app.hyper import HypervisorError, SnapshotInfo, SnapshotNotFound
from app.i18n import N_, ngettext
from app.i18n import gettext as _
from app.i18n.labels import kind_label
from app.i18n.messages import M_, Message
from app.vms.context import VmContext
from app.vms.errors import HypervisorFailure, Invalid, NotFound, Refused, VmError, refuse_if_busy
from app.vms.operations import OperationContext
from app.vms.records import Vm

SNAPSHOT_KINDS = ("simple", "source")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MESSAGES = {
    "take": N_("Taking snapshot {name} of {vm}"),
    "revert": N_("Reverting {vm} to snapshot {name}"),
    "delete": N_("Deleting snapshot {name} of {vm}"),
}


def snapshot_json(snapshot: SnapshotInfo) -> dict[str, Any]:
    return {
        "name": snapshot.name,
        "description": snapshot.description,
        "created_at": snapshot.created_at.isoformat(),
        "state": snapshot.state,
        "with_memory": snapshot.with_memory,
        "current": snapshot.current,
        "parent": snapshot.parent,
    }


def check_snapshottable(vm: Vm) -> None:
    if vm.kind not in SNAPSHOT_KINDS:
        raise Refused(
            _("{name} is a {kind} VM: snapshots are kept for persistent (simple) desktops only").format(
                name=vm.name, kind=kind_label(vm.kind)
            ),
            code="snapshots_unavailable",
        )
    if vm.volatile:
        raise Refused(
            _("{name} is volatile: its changes vanish at every power-off, so it keeps no snapshots").format(
                name=vm.name
            ),
            code="snapshots_unavailable",
        )
    if not vm.disk_path:
        raise Refused(_("{name} has no disk to snapshot").format(name=vm.name), code="no_disk")


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise Invalid(
            {"name": _("use 1 to 64 letters, digits, '.', '-' or '_', starting with a letter or digit")}
        )
    return name


class SnapshotService:
    def __init__(self, ctx: VmContext) -> None:
        self.ctx = ctx

    async def of(self, vm_id: int) -> list[SnapshotInfo]:
        vm = await self.ctx.vm(vm_id)
        check_snapshottable(vm)
        hv = self.ctx.hypervisor(vm.hypervisor_id, new_work=False)
        try:
            return await hv.snapshots(vm.name)
        except HypervisorError as exc:
            raise HypervisorFailure(
                _("listing the snapshots of {name} failed: {reason}").format(name=vm.name, reason=exc)
            ) from exc

    async def take(
        self,
        vm_id: int,
        name: str | None = None,
        description: str = "",
        *,
        limit: int | None = None,
        actor: str = "",
        client_address: str = "",
    ) -> int:
        """Take a snapshot (an operation; its id). ``limit``: at most that many may exist (users)."""
        name = check_name(name) if name else utcnow().strftime("snap-%Y%m%d-%H%M%S")
        if len(description) > 255:
            raise Invalid({"description": _("keep the description under 256 characters")})
        vm, existing = await self._ready(vm_id)
        if any(snapshot.name == name for snapshot in existing):
            taken = _("{vm} already has a snapshot named {name}: choose another name")
            raise Invalid({"name": taken.format(vm=vm.name, name=name)})
        if limit is not None and len(existing) >= limit:
            raise Refused(
                ngettext(
                    "{name} already keeps {count} snapshot, the most allowed: delete it first",
                    "{name} already keeps {count} snapshots, the most allowed: delete one first",
                    len(existing),
                ).format(name=vm.name, count=len(existing)),
                code="snapshot_limit",
            )
        hv = self.ctx.hypervisor(vm.hypervisor_id)

        async def work(op: OperationContext) -> Message:
            await op.progress(5, M_(MESSAGES["take"], name=name, vm=vm.name))
            try:
                taken = await hv.create_snapshot(vm.name, name, description)
            except HypervisorError as exc:
                raise HypervisorFailure(
                    _("taking snapshot {name} of {vm} failed: {reason}").format(
                        name=name, vm=vm.name, reason=exc
                    )
                ) from exc
            if taken.with_memory:
                return M_("Took snapshot {name} of {vm} (disk and memory).", name=name, vm=vm.name)
            return M_("Took snapshot {name} of {vm} (disk).", name=name, vm=vm.name)

        return await self._run("take", vm, name, work, actor=actor, client_address=client_address)

    async def revert(self, vm_id: int, name: str, *, actor: str = "", client_address: str = "") -> int:
        vm, existing = await self._ready(vm_id)
        snapshot = self._find(vm, existing, name)
        hv = self.ctx.hypervisor(vm.hypervisor_id)

        async def work(op: OperationContext) -> Message:
            await op.progress(5, M_(MESSAGES["revert"], name=name, vm=vm.name))
            try:
                await hv.revert_snapshot(vm.name, name)
            except HypervisorError as exc:
                raise HypervisorFailure(
                    _("reverting {vm} to {name} failed: {reason}").format(vm=vm.name, name=name, reason=exc)
                ) from exc
            if snapshot.with_memory:
                return M_("Reverted {vm} to snapshot {name}: running as it was then.", vm=vm.name, name=name)
            return M_(
                "Reverted {vm} to snapshot {name}: stopped, its disk as it was then.", vm=vm.name, name=name
            )

        return await self._run("revert", vm, name, work, actor=actor, client_address=client_address)

    async def delete(self, vm_id: int, name: str, *, actor: str = "", client_address: str = "") -> int:
        vm, existing = await self._ready(vm_id)
        self._find(vm, existing, name)
        hv = self.ctx.hypervisor(vm.hypervisor_id, new_work=False)

        async def work(op: OperationContext) -> Message:
            await op.progress(5, M_(MESSAGES["delete"], name=name, vm=vm.name))
            try:
                await hv.delete_snapshot(vm.name, name)
            except SnapshotNotFound:
                return M_("Snapshot {name} of {vm} was already gone.", name=name, vm=vm.name)
            except HypervisorError as exc:
                raise HypervisorFailure(
                    _("deleting snapshot {name} of {vm} failed: {reason}").format(
                        name=name, vm=vm.name, reason=exc
                    )
                ) from exc
            return M_("Deleted snapshot {name} of {vm}.", name=name, vm=vm.name)

        return await self._run("delete", vm, name, work, actor=actor, client_address=client_address)

    # -- helpers ------------------------------------------------------------------------------

    async def _ready(self, vm_id: int) -> tuple[Vm, list[SnapshotInfo]]:
        vm = await self.ctx.vm(vm_id)
        check_snapshottable(vm)
        refuse_if_busy(vm.name, vm.operation_id)
        return vm, await self.of(vm.id)

    @staticmethod
    def _find(vm: Vm, existing: list[SnapshotInfo], name: str) -> SnapshotInfo:
        found = next((snapshot for snapshot in existing if snapshot.name == name), None)
        if found is None:
            raise NotFound(_("{vm} has no snapshot named {name}").format(vm=vm.name, name=name))
        return found

    async def _run(self, verb: str, vm: Vm, name: str, work: Any, *, actor: str, client_address: str) -> int:
        async def then_announce(op: OperationContext) -> Message:
            try:
                summary: Message = await work(op)
            finally:
                await self.announce(vm)
            return summary

        op_id = await self.ctx.operations.start(
            f"snapshot_{verb}",
            then_announce,
            vm_id=vm.id,
            hypervisor_id=vm.hypervisor_id,
            params={"snapshot": name},
            created_by=actor,
            message=M_(MESSAGES[verb], name=name, vm=vm.name),
        )
        await self.ctx.audit.record(
            f"vm_snapshot_{verb}", actor=actor, target=vm.name, client_address=client_address, snapshot=name
        )
        return op_id

    async def announce(self, vm: Vm) -> None:
        """``snapshot {vm_id, snapshots}`` to admins and to the desktop's current user."""
        try:
            found = [snapshot_json(s) for s in await self.of(vm.id)]
        except VmError:  # the VM or its hypervisor went away meanwhile: nothing to announce
            return
        fresh = await self.ctx.vm(vm.id)
        users = (fresh.assigned_user_id,) if fresh.assigned_user_id is not None else ()
        self.ctx.hub.publish("snapshot", {"vm_id": vm.id, "snapshots": found}, user_ids=users)
