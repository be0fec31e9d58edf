"""Creating VMs: simple and source VMs (one or a batch), initial machines, VDI machines.

Rows are inserted before domains are defined (so the DEFINED event finds them),
and everything made so far is undone when a step fails: no half-created VM stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.hyper import Hypervisor, HypervisorError
from app.i18n import gettext as _
from app.i18n.messages import M_, Message, Mn_
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.definitions import definition_for, hardware_columns, placement_of
from app.vms.disks import create_disks, create_overlays, existing_files
from app.vms.errors import HypervisorFailure, Invalid, Refused, refuse_if_busy
from app.vms.importing import ImportedImage, inspect_import
from app.vms.operations import OperationContext
from app.vms.parameters import (
    NewBatch,
    NewInitial,
    NewVdi,
    NewVm,
    check_placement,
    default_disk_path,
    volatile_overlay_path,
)
from app.vms.provisioning import (
    NewRow,
    Provisioning,
    check_batch_names,
    check_iso,
    check_names,
    define,
    define_all,
    insert_rows,
    refuse_existing_disks,
)
from app.vms.records import update_vm


@dataclass(frozen=True)
class Created:
    vm_ids: list[int]
    operation_id: int | None = None


async def create_vms(ctx: VmContext, spec: NewVm | NewBatch, *, actor: str = "") -> Created:
    """One VM (done before returning) or a batch (an operation) with new empty disks; one VM on an
    imported image (in place at once, or an operation that copies it)."""
    hv = ctx.hypervisor(spec.hypervisor_id)
    imported: ImportedImage | None = None
    in_place = copying = False
    if isinstance(spec, NewVm):
        names = [spec.name]
        await check_names(ctx, names, "name")
        if spec.import_path is not None:
            imported = await inspect_import(ctx, hv, spec.import_path)
        in_place = imported is not None and not spec.import_copy
        copying = imported is not None and spec.import_copy
        disks = [
            imported.path
            if imported is not None and in_place
            else spec.disk_path or default_disk_path(hv.record.images_dir, spec.name)
        ]
    else:
        names = await check_batch_names(ctx, spec)
        disks = [default_disk_path(hv.record.images_dir, name) for name in names]
    errors: dict[str, str] = {}
    for disk in [] if in_place else disks:
        errors.update(
            check_placement(disk_path=disk, images_dir=hv.record.images_dir, iso_path=None, isos=None)
        )
    if errors:
        raise Invalid(errors)
    await check_iso(hv, spec.iso_path)
    if not in_place:
        await refuse_existing_disks(
            hv,
            disks,
            "disk_path" if isinstance(spec, NewVm) else "prefix",
            _("a file already exists at {paths}: choose another name"),
        )
    await check_iso(hv, spec.iso2_path, "iso2_path")
    placement = await placement_of(ctx, hv, spec)
    rows = await insert_rows(
        ctx,
        hv,
        dict(zip(names, disks, strict=True)),
        network=spec.network,
        columns={
            "kind": spec.kind,
            "domain_type": placement.domain_type,
            **hardware_columns(spec),
            "os_type": spec.os_type,
            "vcpu_sockets": spec.vcpu_sockets,
            "vcpu_cores": spec.vcpu_cores,
            "memory_mib": spec.memory_mib,
            "disk_size_gib": imported.size_gib if imported is not None else spec.disk_size_gib,
            "disk_format": imported.format if imported is not None and in_place else "qcow2",
            "disk_imported": in_place,
            "iso_path": spec.iso_path,
            "iso2_path": spec.iso2_path,
            "boot_order": ",".join(spec.boot_order),
        },
    )

    async def provision(op: OperationContext | None) -> Message:
        work = Provisioning(ctx, hv, rows, keep_disks=in_place)
        try:
            if imported is not None and copying:
                await copy_image(hv, imported, rows[0].disk_path, op)
            elif imported is None:
                if op is not None:
                    await op.progress(
                        0, Mn_("Creating {count} disk", "Creating {count} disks", len(rows), count=len(rows))
                    )
                await create_disks(hv, [(row.disk_path, spec.disk_size_gib) for row in rows])
            work.with_firmware_state(spec.firmware == "uefi" or spec.tpm)
            template = placement.firmware.vars_template if placement.firmware else None
            await firmware_state.create_fresh(
                hv, [row.name for row in rows], nvram_template=template, tpm=spec.tpm
            )
            await define_all(
                work,
                lambda row: definition_for(
                    row.name,
                    row.uuid,
                    spec,
                    placement=placement,
                    disk_source=row.disk_path,
                    hv=hv,
                    mac_address=row.mac_address,
                    disk_format=imported.format if imported is not None and in_place else None,
                ),
                op,
            )
        except BaseException:
            await work.undo()
            raise
        return M_("Created {names}.", names=", ".join(names))

    await ctx.audit.record(
        "vm_create",
        actor=actor,
        target=",".join(names),
        kind=spec.kind,
        hypervisor=hv.name,
        memory_mib=spec.memory_mib,
        disk_size_gib=imported.size_gib if imported is not None else spec.disk_size_gib,
        imported=imported.path if imported is not None else "",
        copied=copying,
    )
    if len(rows) == 1 and not copying:
        await provision(None)
        return Created([rows[0].vm_id])
    op_id = await ctx.operations.start(
        "create_vms",
        provision,
        hold=[row.vm_id for row in rows],
        hypervisor_id=hv.id,
        params={"names": names},
        created_by=actor,
        message=M_("Copying {path} for {name}", path=imported.path, name=names[0])
        if copying and imported
        else Mn_("Creating {count} VM", "Creating {count} VMs", len(rows), count=len(rows)),
    )
    return Created([row.vm_id for row in rows], op_id)


async def copy_image(hv: Hypervisor, image: ImportedImage, disk: str, op: OperationContext | None) -> None:
    """The imported image converted to the VM's own standalone qcow2 (the image stays as it is)."""

    async def report(percent: float) -> None:
        if op is not None:
            await op.progress(0.9 * percent, M_("Copying {path}", path=image.path))

    try:
        await hv.convert_disk(image.path, disk, report, src_format=image.format)
    except HypervisorError as exc:
        raise HypervisorFailure(f"copying {image.path} failed: {exc}") from exc


async def create_initial(ctx: VmContext, spec: NewInitial, *, actor: str = "") -> Created:
    """A new initial machine defined on the source's hypervisor, then its first image version
    published from the source's disk (an operation)."""
    from app.vms.publish import start_publish

    source = await ctx.vm(spec.source_id)
    if source.kind != "source":
        raise Invalid({"source_id": _("{name} is not a source VM: choose a source").format(name=source.name)})
    if not source.disk_path:
        raise Refused(_("{name} has no disk to copy").format(name=source.name))
    hv = ctx.hypervisor(source.hypervisor_id)
    await check_names(ctx, [spec.name], "name")
    disk = default_disk_path(hv.record.images_dir, spec.name)
    await refuse_existing_disks(
        hv, [disk], "name", _("a file already exists at {paths}: choose another name")
    )
    placement = await placement_of(ctx, hv, source)
    (row,) = await insert_rows(
        ctx,
        hv,
        {spec.name: disk},
        network=source.network,
        columns={
            "kind": "initial",
            "parent_id": source.id,
            "os_type": source.os_type,
            "disk_size_gib": source.disk_size_gib,
            "iso_path": None,
            "boot_order": "hd",
            "domain_type": placement.domain_type,
            **hardware_columns(source),
            "vcpu_sockets": spec.vcpu_sockets or source.vcpu_sockets,
            "vcpu_cores": spec.vcpu_cores or source.vcpu_cores,
            "memory_mib": spec.memory_mib or source.memory_mib,
        },
    )
    vm_id, uuid, mac = row.vm_id, row.uuid, row.mac_address
    initial = await ctx.vm(vm_id)
    work = Provisioning(ctx, hv, [row])
    try:
        # A fresh NVRAM and TPM now; the source's are copied with its disk.
        work.with_firmware_state(initial.firmware == "uefi" or initial.tpm)
        template = placement.firmware.vars_template if placement.firmware else None
        await firmware_state.create_fresh(hv, [spec.name], nvram_template=template, tpm=initial.tpm)
        await define(
            hv,
            definition_for(
                spec.name,
                uuid,
                initial,
                placement=placement,
                disk_source=disk,
                hv=hv,
                mac_address=mac,
                disk_format="qcow2",  # the copy of the source's disk is qcow2, whatever the source's
            ),
        )
    except BaseException:
        # The disk is not made yet: only the firmware state and the row go.
        work.rows = [NewRow(vm_id, spec.name, uuid, "", mac)]
        await work.undo()
        raise
    await update_vm(ctx.db, vm_id, state="shutoff")
    await ctx.refresh(vm_id, "created")
    await ctx.audit.record("vm_create", actor=actor, target=spec.name, kind="initial", source=source.name)
    op_id = await start_publish(ctx, vm_id, origin="source", actor=actor)
    return Created([vm_id], op_id)


async def create_vdi(ctx: VmContext, spec: NewVdi, *, actor: str = "") -> Created:
    """``count`` VDI machines on an initial: overlays of its target image version (of its own disk
    when it has none yet), on its hypervisor (an operation)."""
    from app.vms.publish import state_of

    initial = await ctx.vm(spec.initial_id)
    if initial.kind != "initial":
        raise Invalid({"initial_id": _("{name} is not an initial machine").format(name=initial.name)})
    refuse_if_busy(initial.name, initial.operation_id)
    hv = ctx.hypervisor(initial.hypervisor_id)
    names = await check_batch_names(ctx, spec)
    target = (await state_of(ctx, initial.id)).target
    base = target.path if target is not None else initial.disk_path
    if not await existing_files(hv, [base]):
        raise Refused(
            _("{name} has no disk yet: publish a version from the source first").format(name=initial.name),
            code="no_disk",
        )
    disks = [default_disk_path(hv.record.images_dir, name) for name in names]
    await refuse_existing_disks(
        hv, disks, "prefix", _("a file already exists at {paths}: choose another prefix")
    )
    placement = await placement_of(ctx, hv, initial)
    rows = await insert_rows(
        ctx,
        hv,
        dict(zip(names, disks, strict=True)),
        network=initial.network,
        columns={
            "kind": "vdi",
            "parent_id": initial.id,
            "volatile": spec.volatile,
            "os_type": initial.os_type,
            "vcpu_sockets": initial.vcpu_sockets,
            "vcpu_cores": initial.vcpu_cores,
            "memory_mib": initial.memory_mib,
            "disk_size_gib": initial.disk_size_gib,
            "boot_order": "hd",
            "domain_type": placement.domain_type,
            **hardware_columns(initial),
            "image_version_id": target.id if target is not None else None,
        },
    )

    async def provision(op: OperationContext) -> Message:
        work = Provisioning(ctx, hv, rows)
        try:
            on = target.label if target is not None else initial.name
            await op.progress(
                0,
                Mn_(
                    "Creating {count} overlay of {on}",
                    "Creating {count} overlays of {on}",
                    len(rows),
                    count=len(rows),
                    on=on,
                ),
            )
            await create_overlays(hv, base, [row.disk_path for row in rows])
            # Each child starts from a copy of the initial's variable store and TPM.
            work.with_firmware_state(initial.firmware == "uefi" or initial.tpm)
            await firmware_state.copy_state(hv, initial, [row.name for row in rows])
            await op.progress(20, M_("Defining the VDI machines"))
            await define_all(
                work,
                lambda row: definition_for(
                    row.name,
                    row.uuid,
                    initial,
                    placement=placement,
                    disk_source=volatile_overlay_path(hv.record.volatile_dir, row.name)
                    if spec.volatile
                    else row.disk_path,
                    hv=hv,
                    mac_address=row.mac_address,
                    disk_format="qcow2",  # overlays of the initial's disk
                ),
                op,
                progress_from=20,
            )
        except BaseException:
            await work.undo()
            raise
        return Mn_(
            "Created {count} VDI machine on {name}: {first} .. {last}.",
            "Created {count} VDI machines on {name}: {first} .. {last}.",
            len(rows),
            count=len(rows),
            name=initial.name,
            first=names[0],
            last=names[-1],
        )

    await ctx.audit.record(
        "vm_create",
        actor=actor,
        target=",".join(names),
        kind="vdi",
        initial=initial.name,
        volatile=spec.volatile,
    )
    op_id = await ctx.operations.start(
        "create_vdi",
        provision,
        vm_id=initial.id,
        hold=[row.vm_id for row in rows],
        hypervisor_id=hv.id,
        params={"names": names},
        created_by=actor,
        message=Mn_(
            "Creating {count} VDI machine", "Creating {count} VDI machines", len(rows), count=len(rows)
        ),
    )
    return Created([row.vm_id for row in rows], op_id)
