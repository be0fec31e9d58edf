"""Managing existing VMs: classify (adopt), flags, CD-ROM media, delete.

Deleting is planned first (:func:`plan_delete`): the plan names every VM and
every file that will be destroyed, the admin confirms exactly that list, and the
deletion refuses to run if the plan changed in between.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from app.hyper import DomainNotFound, Hypervisor, HypervisorError, NotSupported
from app.i18n import gettext as _
from app.i18n import ngettext
from app.i18n.messages import M_, Message, Mn_
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.disks import remove_files
from app.vms.domain_xml import cdrom_device_xml
from app.vms.errors import (
    HypervisorFailure,
    Invalid,
    Refused,
    domain_missing,
    refuse_if_any_busy,
    refuse_if_busy,
)
from app.vms.operations import OperationContext
from app.vms.power import force_off
from app.vms.provisioning import check_iso
from app.vms.records import Vm, children_of, delete_vm_row, list_vms, update_vm, update_vms
from app.vms.versions import versions_of
from app.vms.volatile import apply_flag, overlay_of

log = logging.getLogger("kvmvdi.vms.manage")

CLASSIFIABLE = ("simple", "source", "initial", "vdi")
FLAGS = ("maintenance", "locked", "volatile")


def _not_busy(vm: Vm) -> None:
    refuse_if_busy(vm.name, vm.operation_id)


async def classify(
    ctx: VmContext, vm_id: int, kind: str, parent_id: int | None, *, actor: str = "", client_address: str = ""
) -> Vm:
    """Give a VM (typically an adopted, unclassified one) its kind and parent."""
    vm = await ctx.vm(vm_id)
    _not_busy(vm)
    if kind not in CLASSIFIABLE:
        raise Invalid({"kind": _("choose one of {choices}").format(choices=", ".join(CLASSIFIABLE))})
    parent: Vm | None = None
    if kind == "vdi":
        if parent_id is None:
            raise Invalid({"parent_id": _("a VDI machine needs its initial machine: choose one")})
        parent = await ctx.vm(parent_id)
        if parent.kind != "initial":
            raise Invalid({"parent_id": _("{name} is not an initial machine").format(name=parent.name)})
        if parent.hypervisor_id != vm.hypervisor_id:
            raise Invalid(
                {
                    "parent_id": _(
                        "{name} is on another hypervisor: choose an initial on the same one"
                    ).format(name=parent.name)
                }
            )
    elif kind == "initial" and parent_id is not None:
        parent = await ctx.vm(parent_id)
        if parent.kind != "source":
            raise Invalid({"parent_id": _("{name} is not a source VM").format(name=parent.name)})
    elif kind in ("simple", "source") and parent_id is not None:
        raise Invalid({"parent_id": _("a {kind} VM has no parent: leave it empty").format(kind=kind)})
    if parent is not None and parent.id == vm.id:
        raise Invalid({"parent_id": _("a VM cannot be its own parent")})
    if vm.kind == "initial" and kind != "initial" and await children_of(ctx.db, vm.id):
        raise Refused(_("{name} has VDI machines: delete or reclassify them first").format(name=vm.name))
    if vm.kind == "initial" and kind != "initial" and await versions_of(ctx.db, vm.id):
        raise Refused(_("{name} has published image versions: delete it instead").format(name=vm.name))
    # A machine classified as VDI runs on its initial's own disk until it moves to a version.
    same_place = kind == vm.kind and (parent.id if parent else None) == vm.parent_id
    versions: dict[str, Any] = {"image_version_id": vm.image_version_id if same_place else None}
    if kind != "initial":
        versions["target_version_id"] = None
    await update_vm(ctx.db, vm.id, kind=kind, parent_id=parent.id if parent else None, **versions)
    await ctx.audit.record(
        "vm_classify",
        actor=actor,
        target=vm.name,
        client_address=client_address,
        kind=kind,
        parent=parent.name if parent else None,
        previous=vm.kind,
    )
    updated = await ctx.refresh(vm.id, "classified")
    assert updated is not None
    return updated


async def set_flags(
    ctx: VmContext, vm_id: int, changes: dict[str, bool], *, actor: str = "", client_address: str = ""
) -> Vm:
    """Set maintenance / locked / volatile; a volatile change is applied to the definition."""
    unknown = [name for name in changes if name not in FLAGS]
    if unknown:
        raise Invalid({unknown[0]: _("unknown flag: use {flags}").format(flags=", ".join(FLAGS))})
    vm = await ctx.vm(vm_id)
    if "volatile" in changes and changes["volatile"] != vm.volatile:
        _not_busy(vm)
        if not vm.disk_path:
            raise Refused(_("{name} has no disk: it cannot be volatile").format(name=vm.name))
        hv = ctx.hypervisor(vm.hypervisor_id, new_work=False)
        async with ctx.overlay_lock(vm.id):
            await update_vm(ctx.db, vm.id, volatile=changes["volatile"])
            try:
                await apply_flag(await ctx.vm(vm.id), hv)
            except BaseException:
                await update_vm(ctx.db, vm.id, volatile=vm.volatile)
                raise
    rest = {name: bool(value) for name, value in changes.items() if name != "volatile"}
    if rest:
        await update_vm(ctx.db, vm.id, **rest)
    await ctx.audit.record("vm_flags", actor=actor, target=vm.name, client_address=client_address, **changes)
    updated = await ctx.refresh(vm.id, "flags")
    assert updated is not None
    return updated


async def set_children_flags(
    ctx: VmContext, initial_id: int, changes: dict[str, bool], *, actor: str = "", client_address: str = ""
) -> list[Vm]:
    """A flag change on every VDI child of an initial machine."""
    initial = await ctx.vm(initial_id)
    if initial.kind != "initial":
        raise Invalid({"vm": _("{name} is not an initial machine").format(name=initial.name)})
    children = await children_of(ctx.db, initial.id)
    if "volatile" in changes:
        refuse_if_any_busy(children)
        return [
            await set_flags(ctx, child.id, changes, actor=actor, client_address=client_address)
            for child in children
        ]
    unknown = [name for name in changes if name not in FLAGS]
    if unknown:
        raise Invalid({unknown[0]: _("unknown flag: use {flags}").format(flags=", ".join(FLAGS))})
    await update_vms(ctx.db, [child.id for child in children], **{k: bool(v) for k, v in changes.items()})
    await ctx.audit.record(
        "vm_flags",
        actor=actor,
        target=f"children of {initial.name}",
        client_address=client_address,
        **changes,
    )
    return [vm for child in children if (vm := await ctx.refresh(child.id, "flags")) is not None]


async def change_media(
    ctx: VmContext,
    vm_id: int,
    iso_path: str | None,
    *,
    drive: int = 1,
    actor: str = "",
    client_address: str = "",
) -> Vm:
    """Insert an ISO into CD-ROM drive 1 or 2 (None ejects): live if running, and in the definition."""
    if drive not in (1, 2):
        raise Invalid({"drive": _("choose CD-ROM drive 1 or 2")})
    field_name = "iso_path" if drive == 1 else "iso2_path"
    vm = await ctx.vm(vm_id)
    _not_busy(vm)
    hv = ctx.hypervisor(vm.hypervisor_id, new_work=False)
    await check_iso(hv, iso_path, field_name)
    boot = vm.boot_devices
    drive_name = "cdrom" if drive == 1 else "cdrom2"
    device = cdrom_device_xml(
        iso_path,
        machine="q35" if vm.machine == "q35" else "pc",
        slot=drive - 1,
        boot_index=boot.index(drive_name) + 1 if drive_name in boot else None,
    )
    try:
        await hv.update_device(vm.name, device)
    except DomainNotFound as exc:
        raise domain_missing(vm.name, hv.name) from exc
    except NotSupported as exc:
        raise Refused(
            _("{name}'s hypervisor cannot change its CD-ROM media: {exc}").format(name=vm.name, exc=exc),
            code="not_supported",
        ) from exc
    except HypervisorError as exc:
        raise HypervisorFailure(
            _("changing CD-ROM drive {drive} of {name} failed: {exc}").format(
                drive=drive, name=vm.name, exc=exc
            )
        ) from exc
    await update_vm(ctx.db, vm.id, **{field_name: iso_path})
    await ctx.audit.record(
        "vm_media",
        actor=actor,
        target=vm.name,
        client_address=client_address,
        drive=drive,
        iso=iso_path or "(ejected)",
    )
    updated = await ctx.refresh(vm.id, "media")
    assert updated is not None
    return updated


@dataclass(frozen=True)
class DeletePlan:
    """What a deletion destroys: the VMs (children first) and the files removed with them."""

    vms: list[Vm]
    files: list[str]
    kept_files: list[str] = field(default_factory=list)
    # UEFI variable stores and TPM states: each VM's own, always removed with it.
    state_files: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [vm.name for vm in self.vms]

    def summary(self) -> dict[str, Any]:
        return {
            "vms": self.names,
            "files": self.files,
            "kept_files": self.kept_files,
            "state_files": self.state_files,
        }


async def plan_delete(ctx: VmContext, vm_id: int, *, with_children: bool, remove_disks: bool) -> DeletePlan:
    vm = await ctx.vm(vm_id)
    targets: list[Vm] = []
    if vm.kind == "initial":
        children = await children_of(ctx.db, vm.id)
        if children and not with_children:
            names = ", ".join(child.name for child in children)
            raise Refused(
                _(
                    "{name} still has {count} VDI machines ({names}): delete them first, or choose “delete with children”"  # noqa: E501
                ).format(name=vm.name, count=len(children), names=names),
                code="has_children",
            )
        targets.extend(children)
    targets.append(vm)
    locked = [target.name for target in targets if target.locked]
    if locked:
        raise Refused(
            ngettext(
                "{names} is locked: unlock first", "{names} are locked: unlock first", len(locked)
            ).format(names=", ".join(locked)),
            code="locked",
        )
    refuse_if_any_busy(targets)
    files: list[str] = []
    kept: list[str] = []
    if remove_disks:
        doomed = {target.id for target in targets}
        others = [other for other in await list_vms(ctx.db) if other.id not in doomed]
        shared = {other.disk_path for other in others if other.disk_path}
        # Overlays of other VMs whose base is a doomed disk keep that disk alive.
        bases = {
            parent.disk_path
            for other in others
            if other.parent_id in doomed and other.kind == "vdi"
            for parent in targets
            if parent.id == other.parent_id
        }
        for target in targets:
            if not target.disk_path:
                continue
            if target.disk_path in shared or target.disk_path in bases:
                kept.append(target.disk_path)
            else:
                files.append(target.disk_path)
        if vm.kind == "initial":
            # Its published image versions go with it (its VDI machines go too, or it is refused).
            files.extend(v.path for v in await versions_of(ctx.db, vm.id) if v.path not in files + kept)
    state: list[str] = []
    for target in targets:
        found = ctx.registry.find(target.hypervisor_id)
        if found is not None and (target.firmware == "uefi" or target.tpm):
            paths = firmware_state.paths_of(target.name, found.record.images_dir, found.record.volatile_dir)
            state += [paths.nvram] if target.firmware == "uefi" else []
            state += [paths.tpm_dir] if target.tpm else []
    return DeletePlan(vms=targets, files=files, kept_files=kept, state_files=state)


async def delete(
    ctx: VmContext,
    vm_id: int,
    *,
    with_children: bool,
    remove_disks: bool,
    confirmed_vms: list[str] | None,
    confirmed_files: list[str] | None,
    actor: str = "",
    client_address: str = "",
) -> tuple[DeletePlan, int | None]:
    """Delete what the plan names, if the admin confirmed exactly that; (plan, operation id or None)."""
    plan = await plan_delete(ctx, vm_id, with_children=with_children, remove_disks=remove_disks)
    if confirmed_vms is None or sorted(confirmed_vms) != sorted(plan.names):
        raise Invalid(
            {"confirm_vms": _("confirm the exact list of VMs to delete (it changed or is missing)")}
        )
    if confirmed_files is None or sorted(confirmed_files) != sorted(plan.files):
        raise Invalid(
            {"confirm_files": _("confirm the exact list of files to remove (it changed or is missing)")}
        )
    root = plan.vms[-1]
    hv = ctx.hypervisor(root.hypervisor_id, new_work=False)
    await ctx.audit.record(
        "vm_delete",
        actor=actor,
        target=root.name,
        client_address=client_address,
        vms=plan.names,
        files=plan.files,
    )

    async def remove_one(vm: Vm) -> None:
        await force_off(hv, vm)
        try:
            await hv.undefine(vm.name)
        except HypervisorError as exc:
            if await _domain_exists(hv, vm.name):
                raise HypervisorFailure(f"undefining {vm.name} failed: {exc}") from exc
        files = [overlay_of(vm, hv)]
        if vm.disk_path in plan.files:
            files.append(vm.disk_path)
        if vm.kind == "initial":
            files.extend(v.path for v in await versions_of(ctx.db, vm.id) if v.path in plan.files)
        await remove_files(hv, files)
        # Its NVRAM and TPM state are its own (children have copies, never links).
        await firmware_state.stop_swtpm(hv, vm)
        await firmware_state.remove(hv, firmware_state.all_files(hv, vm))
        await delete_vm_row(ctx.db, vm.id)
        ctx.publish_removed(vm.id, vm.name)

    if len(plan.vms) == 1:
        await remove_one(root)
        return plan, None

    async def work(op: OperationContext) -> Message:
        for index, vm in enumerate(plan.vms, start=1):
            await remove_one(vm)
            await op.progress(
                100.0 * index / len(plan.vms),
                M_("Deleted {index} of {total}", index=index, total=len(plan.vms)),
            )
            await asyncio.sleep(0)
        return M_("Deleted {names}.", names=", ".join(plan.names))

    op_id = await ctx.operations.start(
        "delete",
        work,
        hold=[vm.id for vm in plan.vms],
        hypervisor_id=hv.id,
        params=plan.summary(),
        created_by=actor,
        message=Mn_("Deleting {count} VM", "Deleting {count} VMs", len(plan.vms), count=len(plan.vms)),
    )
    return plan, op_id


async def _domain_exists(hv: Hypervisor, name: str) -> bool:
    try:
        return any(domain.name == name for domain in await hv.list_domains())
    except HypervisorError:
        return True
