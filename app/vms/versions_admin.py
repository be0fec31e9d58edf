"""Choosing the target version (roll back / forward), deleting unused versions, and starting an
initial machine whose own disk VDI machines still run on.

A version is deleted only when no VDI machine runs on it and it is not the target;
the plan names the file removed (and the initial's working disk, recreated on the
target, when it was based on that version), and the deletion runs only if the
admin confirmed exactly that plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.hyper import HypervisorError
from app.i18n import gettext as _
from app.i18n import ngettext
from app.vms.context import VmContext
from app.vms.disks import backing_files, confined, create_overlays, remove_files
from app.vms.errors import (
    HypervisorFailure,
    Invalid,
    NotFound,
    Refused,
    VmError,
    refuse_if_any_busy,
    refuse_if_busy,
)
from app.vms.power import RUNNING, force_off, live_state
from app.vms.publish import initial_checks, state_of
from app.vms.records import Vm, update_vm, update_vms, vms_by_ids
from app.vms.versions import ImageState, ImageVersion, delete_version_row, set_child_versions

log = logging.getLogger("kvmvdi.vms.versions")


def _version(state: ImageState, version_id: int) -> ImageVersion:
    version = state.version(version_id)
    if version is None:
        raise NotFound(
            _("{name} has no version {version_id}").format(name=state.initial.name, version_id=version_id)
        )
    return version


async def set_target(ctx: VmContext, initial_id: int, version_id: int, *, actor: str = "") -> ImageState:
    """Make ``version_id`` the version new and reset VDI machines get (roll back or forward)."""
    state = await state_of(ctx, initial_id)
    initial = state.initial
    if initial.kind != "initial":
        raise Invalid({"vm": _("{name} is not an initial machine").format(name=initial.name)})
    version = _version(state, version_id)
    previous = state.target
    if previous is not None and previous.id == version.id:
        raise Refused(
            _("{version} already is the target of {name}").format(version=version.label, name=initial.name),
            code="nothing_to_do",
        )
    refuse_if_busy(initial.name, initial.operation_id)
    await update_vm(ctx.db, initial.id, target_version_id=version.id)
    await ctx.audit.record(
        "image_target",
        actor=actor,
        target=initial.name,
        version=version.label,
        previous=previous.label if previous else None,
    )
    fresh = await state_of(ctx, initial.id)
    ctx.hub.publish("image", fresh.summary())
    await ctx.refresh(initial.id, "image")
    for child in await vms_by_ids(ctx.db, [child.id for child in fresh.children]):
        ctx.publish_vm(child, "image")
    return fresh


async def roll_back(ctx: VmContext, initial_id: int, *, actor: str = "") -> ImageState:
    """Make the version before the target the target again."""
    state = await state_of(ctx, initial_id)
    target = state.target
    older = [v for v in state.versions if target is not None and v.number < target.number]
    if target is None or not older:
        raise Refused(
            _("{name} has no version older than its target to roll back to").format(name=state.initial.name)
        )
    return await set_target(ctx, initial_id, older[-1].id, actor=actor)


async def _running_on(ctx: VmContext, state: ImageState, version: ImageVersion) -> list[Vm]:
    """The VDI machines on ``version``: by their rows, and by what their disks really read.

    A move interrupted between recreating an overlay and recording it leaves a row that
    names the version it left; the disks are asked, and such a row is put right.
    """
    hv = ctx.hypervisor(state.initial.hypervisor_id, new_work=False)
    try:
        actual = await backing_files(hv, [child.disk_path for child in state.children if child.disk_path])
    except VmError as exc:
        raise HypervisorFailure(
            _("checking which version each VDI machine reads failed: {reason}").format(reason=exc.message)
        ) from exc
    by_path = {v.path: v for v in state.versions}
    for child in state.children:
        read = by_path.get(actual.get(child.disk_path) or "")
        if read is not None and read.id != child.image_version_id:
            log.warning("%s reads %s, not what its row said: recorded", child.name, read.label)
            await set_child_versions(ctx.db, [child.id], read.id)
    return [
        child
        for child in state.children
        if child.image_version_id == version.id or actual.get(child.disk_path) == version.path
    ]


@dataclass(frozen=True)
class VersionDeletePlan:
    version: ImageVersion
    files: list[str]
    # The initial's working disk, recreated on the target, when it was based on this version.
    working_disk: str | None
    target: ImageVersion

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version.summary(),
            "files": self.files,
            "working_disk": (
                {"path": self.working_disk, "recreated_on": self.target.label} if self.working_disk else None
            ),
        }


async def plan_version_delete(ctx: VmContext, initial_id: int, version_id: int) -> VersionDeletePlan:
    state = await state_of(ctx, initial_id)
    initial = state.initial
    version = _version(state, version_id)
    target = state.target
    if target is None or target.id == version.id:
        raise Refused(
            _("{version} is the target of {name}: make another version the target first").format(
                version=version.label, name=initial.name
            ),
            code="version_in_use",
        )
    users = await _running_on(ctx, state, version)
    if users:
        names = ", ".join(child.name for child in users)
        raise Refused(
            ngettext(
                "{count} VDI machine still runs on {version} ({names}): it moves to {target}"
                " when reset or returned, or roll the idle ones now",
                "{count} VDI machines still run on {version} ({names}): they move to {target}"
                " when reset or returned, or roll the idle ones now",
                len(users),
            ).format(count=len(users), version=version.label, names=names, target=target.label),
            code="version_in_use",
            details={"vms": [child.name for child in users]},
        )
    if version.path == initial.disk_path:
        raise Refused(
            _("{version} is the disk of {name} itself: publish a version first").format(
                version=version.label, name=initial.name
            )
        )
    working = initial.disk_path if initial.image_version_id == version.id else None
    return VersionDeletePlan(version=version, files=[version.path], working_disk=working, target=target)


async def delete_version(
    ctx: VmContext,
    initial_id: int,
    version_id: int,
    *,
    confirmed_files: list[str] | None,
    actor: str = "",
    client_address: str = "",
) -> VersionDeletePlan:
    initial = await ctx.vm(initial_id)
    initial_checks(initial, _("delete a version"))
    plan = await plan_version_delete(ctx, initial_id, version_id)
    if confirmed_files is None or sorted(confirmed_files) != sorted(plan.files):
        raise Invalid(
            {"confirm_files": _("confirm the exact list of files to remove (it changed or is missing)")}
        )
    hv = ctx.hypervisor(initial.hypervisor_id, new_work=False)
    confined(hv, plan.files)
    if plan.working_disk is not None:
        if await live_state(hv, initial) in RUNNING:
            raise Refused(
                _("shut down {name} first: its working disk is based on this version").format(
                    name=initial.name
                )
            )
        # The working disk reads the version: it moves to the target before the file goes.
        await create_overlays(hv, plan.target.path, [plan.working_disk])
        await update_vm(ctx.db, initial.id, image_version_id=plan.target.id)
    # The row first: a file that outlives its row is an orphan, a row without its file a lie.
    await delete_version_row(ctx.db, plan.version.id)
    await remove_files(hv, plan.files)
    await ctx.audit.record(
        "image_version_delete",
        actor=actor,
        target=initial.name,
        client_address=client_address,
        version=plan.version.label,
        files=plan.files,
    )
    ctx.hub.publish("image", (await state_of(ctx, initial.id)).summary())
    return plan


async def clear_for_start(
    ctx: VmContext, initial: Vm, confirmed: list[str] | None, *, actor: str = ""
) -> None:
    """Before an initial machine starts: refuse if locked; VDI machines on its own disk are forced
    off and put in maintenance first, once the admin confirmed exactly those machines."""
    if initial.locked:
        raise Refused(
            _("{name} is locked: unlock it to {action}").format(name=initial.name, action=_("start it")),
            code="locked",
        )
    refuse_if_busy(initial.name, initial.operation_id)
    state = await state_of(ctx, initial.id)
    dependents = state.dependents()
    if not dependents:
        return
    names = sorted(child.name for child in dependents)
    if confirmed is None or sorted(confirmed) != names:
        raise Refused(
            ngettext(
                "{count} VDI machine runs on the disk of {name} ({names}): starting it changes that disk"
                " under it. Confirm to force it off and put it in maintenance first, or publish a version"
                " and move it to it.",
                "{count} VDI machines run on the disk of {name} ({names}): starting it changes that disk"
                " under them. Confirm to force them off and put them in maintenance first, or publish a"
                " version and move them to it.",
                len(names),
            ).format(count=len(names), name=initial.name, names=", ".join(names)),
            code="children_depend",
            details={"vms": names},
        )
    refuse_if_any_busy(dependents)
    hv = ctx.hypervisor(initial.hypervisor_id)
    await update_vms(ctx.db, [child.id for child in dependents], maintenance=True)
    for child in dependents:
        try:
            await force_off(hv, child)
        except HypervisorError as exc:
            raise HypervisorFailure(
                _("forcing {name} off failed: {reason}").format(name=child.name, reason=exc)
            ) from exc
    for child in await vms_by_ids(ctx.db, [child.id for child in dependents]):
        ctx.publish_vm(child, "flags")
    await ctx.audit.record(
        "vm_children_stopped",
        actor=actor,
        target=initial.name,
        vms=names,
        reason="initial started",  # i18n-ignore: an audit field's value
    )
