"""Publishing a new version of an initial machine's image (operation ``publish``).

Version N+1 is copied, with live progress, from the source VM's disk or from the
initial's own working disk (the edit made by starting it; the copy flattens it
into a standalone qcow2) to ``<name>.v<N+1>.qcow2`` beside the versions children
run on, which are never written. The copy goes to a temporary name and is renamed
at the end; the new file is recorded as a temporary file of the operation until
its version row exists (one transaction), so a dashboard that stops at any point
leaves either a published version or no file at all. N+1 becomes the target; the
initial's working disk is then recreated on it. VDI machines keep running on their
version: they move when reset or returned, or when the idle ones are rolled.
"""

from __future__ import annotations

import logging
import posixpath

from app.hyper import Hypervisor, HypervisorError
from app.hyper.disks import partial_path
from app.i18n import gettext as _
from app.i18n.messages import M_, Message, Mn_
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.disks import (
    backing_file,
    confined,
    create_overlays,
    existing_files,
    image_info,
    no_space,
    part_path,
)
from app.vms.errors import HypervisorFailure, Invalid, Refused, refuse_if_busy
from app.vms.operations import OperationContext
from app.vms.power import RUNNING, live_state, stop_gracefully
from app.vms.records import Vm, update_vm
from app.vms.versions import (
    ImageState,
    ImageVersion,
    edit_path,
    image_state,
    insert_version,
    set_child_versions,
    version_path,
)

log = logging.getLogger("kvmvdi.vms.publish")

PUBLISH_ORIGINS = ("source", "initial")


def initial_checks(initial: Vm, action: str) -> None:
    """Refuse work on an initial machine that is locked or busy; ``action`` (translated) names the work."""
    if initial.kind != "initial":
        raise Invalid({"vm": _("{name} is not an initial machine").format(name=initial.name)})
    if initial.locked:
        raise Refused(
            _("{name} is locked: unlock it to {action}").format(name=initial.name, action=action),
            code="locked",
        )
    refuse_if_busy(initial.name, initial.operation_id)


async def state_of(ctx: VmContext, initial_id: int) -> ImageState:
    state = await image_state(ctx.db, initial_id)
    if state is None:
        await ctx.vm(initial_id)  # raises NotFound
        raise AssertionError("unreachable")
    return state


async def adopt_own_disk(ctx: VmContext, state: ImageState, *, actor: str) -> ImageState:
    """VDI machines made before versions existed run on the initial's own disk: record that
    disk as a version (and the target, if there is none), so they can move and roll back."""
    initial = state.initial
    legacy = [child for child in state.children if state.version(child.image_version_id) is None]
    if not legacy:
        return state
    adopted = next((v for v in state.versions if v.path == initial.disk_path), None)
    version_id = adopted.id if adopted is not None else None
    if version_id is None:
        version_id = await insert_version(
            ctx.db,
            initial_id=initial.id,
            number=state.next_number,
            path=initial.disk_path,
            origin="adopted",
            origin_name=initial.name,
            note="the disk its VDI machines already ran on",
            created_by=actor,
        )
    await set_child_versions(ctx.db, [child.id for child in legacy], version_id)
    if state.target is None:
        await update_vm(ctx.db, initial.id, target_version_id=version_id)
    return await state_of(ctx, initial.id)


async def new_version_file(hv: Hypervisor, state: ImageState) -> str:
    """Where version N+1 goes: beside the initial's disk; refused if a file is already there."""
    initial = state.initial
    directory = posixpath.dirname(initial.disk_path) or hv.record.images_dir
    target = version_path(directory, initial.name, state.next_number)
    confined(hv, [target])
    if await existing_files(hv, [target]):
        raise Refused(
            _("a file already exists at {path}: move it away, then publish again").format(path=target)
        )
    return target


async def start_publish(
    ctx: VmContext,
    initial_id: int,
    *,
    origin: str,
    shutdown: bool = False,
    note: str = "",
    actor: str = "",
) -> int:
    """Publish version N+1 of the initial's image (an operation); its id."""
    if origin not in PUBLISH_ORIGINS:
        raise Invalid(
            {"origin": _("publish from the source VM ('source') or the initial's disk ('initial')")}
        )
    if len(note) > 255:
        raise Invalid({"note": _("keep the note under 256 characters")})
    initial = await ctx.vm(initial_id)
    initial_checks(initial, _("publish a new version"))
    hv = ctx.hypervisor(initial.hypervisor_id)
    hold: list[int] = []
    state_from: Vm | None = None
    if origin == "source":
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
        if await live_state(hv, source) in RUNNING:
            raise Refused(
                _("shut down the source {name} first: a running disk cannot be copied consistently").format(
                    name=source.name
                ),
                code="running",
            )
        refuse_if_busy(source.name, source.operation_id)
        copy_from, origin_name, copy_format = source.disk_path, source.name, source.disk_format
        hold.append(source.id)
        if source.firmware == initial.firmware and source.tpm == initial.tpm:
            # The variable store (boot entries, enrolled keys) and the TPM belong with the disk.
            state_from = source
    else:
        copy_from, origin_name, copy_format = initial.disk_path, initial.name, initial.disk_format
    confined(hv, [copy_from])
    if not copy_from or not await existing_files(hv, [copy_from]):
        raise Refused(
            _("there is no disk at {path} to publish").format(path=copy_from or "(none)"), code="no_disk"
        )
    if await live_state(hv, initial) in RUNNING and not shutdown:
        raise Refused(
            _(
                "{name} is running: shut it down first, or publish with “shut it down first”"
                " (its guest gets the ACPI power button, then is forced off)"
            ).format(name=initial.name),
            code="running",
        )
    state = await adopt_own_disk(ctx, await state_of(ctx, initial.id), actor=actor)
    number = state.next_number
    target = await new_version_file(hv, state)

    async def work(op: OperationContext) -> Message:
        publication = Publication(
            ctx,
            op,
            hv,
            state,
            copy_from=copy_from,
            copy_format=copy_format,
            target=target,
            state_from=state_from,
        )
        version = await publication.run(origin=origin, origin_name=origin_name, note=note, actor=actor)
        if origin == "source":
            said = M_(
                "Published {version} of {name} from the source {source}.",
                version=version.label,
                name=initial.name,
                source=origin_name,
            )
        else:
            said = M_(
                "Published {version} of {name} from the working disk of {name}.",
                version=version.label,
                name=initial.name,
            )
        moving = len(state.children)
        if moving:
            said += Mn_(
                "Its {count} VDI machine moves to it when reset or returned; or roll the idle ones now.",
                "Its {count} VDI machines move to it when reset or returned; or roll the idle ones now.",
                moving,
                count=moving,
            )
        return said

    op_id = await ctx.operations.start(
        "publish",
        work,
        vm_id=initial.id,
        hold=hold,
        hypervisor_id=hv.id,
        params={"origin": origin, "from": copy_from, "version": number, "path": target, "shutdown": shutdown},
        created_by=actor,
        message=M_("Publishing v{number} of {name}", number=str(number), name=initial.name),
    )
    await ctx.audit.record(
        "image_publish", actor=actor, target=initial.name, origin=origin, source=origin_name, version=number
    )
    return op_id


class Publication:
    def __init__(
        self,
        ctx: VmContext,
        op: OperationContext,
        hv: Hypervisor,
        state: ImageState,
        *,
        copy_from: str,
        target: str,
        copy_format: str = "qcow2",
        state_from: Vm | None = None,
    ) -> None:
        self.ctx, self.op, self.hv, self.state = ctx, op, hv, state
        self.copy_from, self.copy_format, self.target = copy_from, copy_format, target
        self.state_from = state_from

    # The initial's working disk is recreated on the new version (it was stopped for the copy).
    renews_working_disk = True

    async def run(self, *, origin: str, origin_name: str, note: str, actor: str) -> ImageVersion:
        ctx, op, hv, initial = self.ctx, self.op, self.hv, self.state.initial
        tag = f"op{op.id}"
        temp = partial_path(self.target, tag)
        # Both names are recorded before anything is written: a dashboard that dies meanwhile
        # still knows what to remove (the final name too, until its version row exists).
        await op.temp_file(hv.id, temp)
        await op.temp_file(hv.id, self.target)
        number = self.state.next_number
        note = await self.copy(number, tag, temp, note)
        info = await image_info(hv, self.target)
        if await backing_file(hv, self.target) is not None:
            raise HypervisorFailure(
                _("{disk_path} still depends on a backing file after the copy").format(disk_path=self.target)
            )
        if self.state_from is not None:
            await firmware_state.copy_state(hv, self.state_from, [initial.name])
        async with ctx.db.transaction():
            version_id = await insert_version(
                ctx.db,
                initial_id=initial.id,
                number=number,
                path=self.target,
                origin=origin,
                origin_name=origin_name,
                size_bytes=int(info.get("actual-size") or 0) or None,
                note=note,
                created_by=actor,
            )
            await update_vm(ctx.db, initial.id, target_version_id=version_id)
            await op.temp_file_done(self.target)
            await op.temp_file_done(temp)
        if self.renews_working_disk:
            await op.progress(
                99,
                M_(
                    "Published v{number}; preparing the working disk of {name}",
                    number=str(number),
                    name=initial.name,
                ),
            )
            await self.renew_working_disk(version_id)
        state = await state_of(ctx, initial.id)
        ctx.hub.publish("image", state.summary())
        await ctx.refresh(initial.id, "image")
        version = state.version(version_id)
        assert version is not None
        return version

    async def copy(self, number: int, tag: str, temp: str, note: str) -> str:
        """Write the new version to ``self.target`` (through ``temp``, renamed at the end); the note."""
        op, hv, initial = self.op, self.hv, self.state.initial
        if await live_state(hv, initial) in RUNNING:
            await op.progress(0, M_("Shutting {name} down before copying its disk", name=initial.name))
            await stop_gracefully(self.ctx, hv, initial)
        await op.progress(1, M_("Copying {path} to v{number}", path=self.copy_from, number=str(number)))

        async def report(percent: float) -> None:
            await op.progress(
                1 + 0.97 * percent,
                M_("Copying: {percent} % to v{number}", percent=round(percent), number=str(number)),
            )

        try:
            await hv.convert_disk(self.copy_from, self.target, report, op_id=tag, src_format=self.copy_format)
        except HypervisorError as exc:
            what = f"copying {self.copy_from} to v{number}"
            if (full := await no_space(hv, exc, posixpath.dirname(self.target), what)) is not None:
                raise full from exc
            raise HypervisorFailure(f"copying {self.copy_from} failed: {exc}") from exc
        return note

    async def renew_working_disk(self, version_id: int) -> None:
        """The initial's working disk becomes an empty overlay of the new version.

        It keeps its path unless VDI machines still run on that very file (made before
        versions existed): then it moves to ``<name>.edit.qcow2``.
        """
        initial = self.state.initial
        state = await state_of(self.ctx, initial.id)
        taken = {version.path for version in state.versions}
        working = initial.disk_path
        if not working or working in taken or state.dependents():
            working = edit_path(posixpath.dirname(self.target), initial.name)
        await self.op.temp_file(self.hv.id, part_path(working))
        await create_overlays(self.hv, self.target, [working])
        await self.op.temp_file_done(part_path(working))
        await update_vm(self.ctx.db, initial.id, disk_path=working, image_version_id=version_id)
