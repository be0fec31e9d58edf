"""The steps every VM creation shares: names and disk paths checked, rows inserted before the
domains are defined (so the DEFINED event finds them), domains defined, and everything made so far
undone when a step fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.hyper import Hypervisor, HypervisorError
from app.hyper.errors import DirectoryMissing
from app.i18n import gettext as _
from app.i18n import ngettext
from app.i18n.messages import M_
from app.vms import firmware_state
from app.vms.context import VmContext
from app.vms.disks import existing_files, remove_files
from app.vms.domain_xml import DomainDefinition, build_domain_xml, new_uuid, random_mac
from app.vms.errors import HypervisorFailure, Invalid
from app.vms.operations import OperationContext
from app.vms.parameters import DefinitionError, NewBatch, NewVdi
from app.vms.records import delete_vm_row, insert_vm, taken_names, update_vm

log = logging.getLogger("kvmvdi.vms.create")


async def check_names(ctx: VmContext, names: list[str], field: str) -> None:
    taken = await taken_names(ctx.db, names)
    if taken:
        raise Invalid(
            {
                field: ngettext(
                    "{names} already exists: choose another name",
                    "{names} already exist: choose another name",
                    len(taken),
                ).format(names=", ".join(taken))
            }
        )


async def offered_isos(hv: Hypervisor) -> list[str]:
    try:
        return [iso.path for iso in await hv.list_isos()]
    except DirectoryMissing:
        return []  # nothing to offer: the path is refused as not on the list
    except HypervisorError as exc:
        raise HypervisorFailure(_("listing the hypervisor's ISOs failed: {exc}").format(exc=exc)) from exc


async def check_iso(hv: Hypervisor, iso_path: str | None, field: str = "iso_path") -> None:
    if iso_path is not None and iso_path not in await offered_isos(hv):
        raise Invalid({field: _("choose an ISO from the hypervisor's list")})


async def check_batch_names(ctx: VmContext, spec: NewBatch | NewVdi) -> list[str]:
    """The names a batch (prefix and count) gives, none of them taken."""
    try:
        names = spec.names()
    except DefinitionError as exc:
        raise Invalid(exc.errors) from None
    await check_names(ctx, names, "prefix")
    return names


async def refuse_existing_disks(hv: Hypervisor, disks: list[str], field: str, message: str) -> None:
    """Refuse, on ``field``, new disk paths where a file already is (``message`` names them)."""
    existing = await existing_files(hv, disks)
    if existing:
        raise Invalid({field: message.format(paths=", ".join(existing))})


@dataclass(frozen=True)
class NewRow:
    """A new VM being provisioned: its row and what its domain is made of."""

    vm_id: int
    name: str
    uuid: str
    disk_path: str  # "" while there is no disk to undo
    mac_address: str | None


class Provisioning:
    """Defines the domains of new VM rows; :meth:`undo` removes all that was made so far."""

    def __init__(
        self, ctx: VmContext, hv: Hypervisor, rows: list[NewRow], *, keep_disks: bool = False
    ) -> None:
        self.ctx, self.hv, self.rows = ctx, hv, rows
        self.defined: list[str] = []
        self.firmware_state = False
        # An image imported in place existed before and stays when the VM could not be made.
        self.keep_disks = keep_disks

    def with_firmware_state(self, made: bool) -> None:
        """The VMs get an NVRAM and/or TPM state: undoing removes those too."""
        self.firmware_state = made

    async def define(self, vm_id: int, definition: DomainDefinition) -> None:
        await define(self.hv, definition)
        self.defined.append(definition.name)
        await update_vm(self.ctx.db, vm_id, state="shutoff")
        await self.ctx.refresh(vm_id, "created")

    async def undo(self) -> None:
        for name in self.defined:
            try:
                await self.hv.undefine(name)
            except HypervisorError as exc:
                log.warning("undoing: undefine %s failed: %s", name, exc)
        files = [] if self.keep_disks else [row.disk_path for row in self.rows if row.disk_path]
        if self.firmware_state:
            for row in self.rows:
                paths = firmware_state.state_paths(self.hv, row.name)
                files += [paths.nvram, paths.tpm_dir]
        try:
            await remove_files(self.hv, files)
        except Exception as exc:
            log.warning("undoing: removing %s failed: %s", files, exc)
        for row in self.rows:
            await delete_vm_row(self.ctx.db, row.vm_id)
            self.ctx.publish_removed(row.vm_id, row.name)


async def insert_rows(
    ctx: VmContext,
    hv: Hypervisor,
    disks: dict[str, str],
    *,
    network: str | None,
    columns: dict[str, object],
) -> list[NewRow]:
    """A row per new VM (name to disk path), in state "unknown" until its domain is defined."""
    rows: list[NewRow] = []
    for name, disk in disks.items():
        uuid = new_uuid()
        mac = random_mac() if network else None
        vm_id = await insert_vm(
            ctx.db,
            name=name,
            uuid=uuid,
            hypervisor_id=hv.id,
            state="unknown",
            disk_path=disk,
            network=network,
            mac_address=mac,
            **columns,
        )
        rows.append(NewRow(vm_id, name, uuid, disk, mac))
    return rows


async def define_all(
    work: Provisioning,
    definition: Callable[[NewRow], DomainDefinition],
    op: OperationContext | None,
    *,
    progress_from: float = 0.0,
) -> None:
    """Define every new row's domain; an operation's progress goes from ``progress_from`` to 100."""
    total = len(work.rows)
    for index, row in enumerate(work.rows, start=1):
        await work.define(row.vm_id, definition(row))
        if op is not None:
            await op.progress(
                progress_from + (100.0 - progress_from) * index / total,
                M_("Defined {index} of {total}", index=index, total=total),
            )


async def define(hv: Hypervisor, definition: DomainDefinition) -> None:
    try:
        await hv.define(build_domain_xml(definition))
    except HypervisorError as exc:
        raise HypervisorFailure(f"defining {definition.name} failed: {exc}") from exc
