"""Device policy: may a desktop's console client use the clipboard, send files, redirect USB devices?

All off unless allowed. A pooled desktop follows its pool's policy (set when it
joins the pool and whenever the pool's policy changes); a VM in no pool has its
own. The VM row holds the policy in force; the definition follows it at once
when the VM is off, otherwise at its next start (the SPICE server reads it when
QEMU starts), and the ``.vv`` file follows the row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from app.db.schema import pool_vms, pools
from app.hyper import HypervisorError
from app.i18n import gettext as _
from app.vms.context import VmContext
from app.vms.devices.usb import MAX_REDIRECTIONS
from app.vms.domain_xml import DevicePolicy
from app.vms.errors import Invalid, Refused, VmError
from app.vms.records import Vm, update_vms, vms_by_ids
from app.vms.volatile import align_definition, boot_target

log = logging.getLogger("kvmvdi.vms.policy")

FIELDS = ("clipboard", "file_transfer", "usb_redirect")


def parse_policy(data: dict[str, Any], current: DevicePolicy) -> DevicePolicy:
    """``current`` changed by ``data`` (clipboard, file_transfer: true/false; usb_redirect: 0-4)."""
    unknown = [name for name in data if name not in FIELDS]
    if unknown:
        raise Invalid({unknown[0]: _("unknown field: use clipboard, file_transfer or usb_redirect")})
    errors: dict[str, str] = {}
    values = {
        "clipboard": current.clipboard,
        "file_transfer": current.file_transfer,
        "usb_redirect": current.usb_redirections,
    }
    for name in ("clipboard", "file_transfer"):
        if name in data:
            if not isinstance(data[name], bool):
                errors[name] = _("give true or false")
            else:
                values[name] = data[name]
    if "usb_redirect" in data:
        count = data["usb_redirect"]
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_REDIRECTIONS:
            errors["usb_redirect"] = _("give a number of USB devices from 0 to {count}").format(
                count=MAX_REDIRECTIONS
            )
        else:
            values["usb_redirect"] = count
    if errors:
        raise Invalid(errors)
    return DevicePolicy(bool(values["clipboard"]), bool(values["file_transfer"]), int(values["usb_redirect"]))


def columns(policy: DevicePolicy) -> dict[str, Any]:
    return {
        "clipboard": policy.clipboard,
        "file_transfer": policy.file_transfer,
        "usb_redirect": policy.usb_redirections,
    }


async def pool_of(ctx: VmContext, vm_id: int) -> Any | None:
    query = sa.select(pools).select_from(pools.join(pool_vms, pool_vms.c.pool_id == pools.c.id))
    return await ctx.db.fetch_one(query.where(pool_vms.c.vm_id == vm_id))


async def set_vm_policy(
    ctx: VmContext, vm_id: int, data: dict[str, Any], *, actor: str = "", client_address: str = ""
) -> Vm:
    vm = await ctx.vm(vm_id)
    pool = await pool_of(ctx, vm.id)
    if pool is not None:
        raise Refused(
            _("{vm} is in the pool {pool}: its device policy is the pool's, change it there").format(
                vm=vm.name, pool=pool.name
            ),
            code="pooled",
        )
    policy = parse_policy(data, vm.policy)
    await apply(ctx, [vm.id], policy)
    await ctx.audit.record(
        "vm_policy", actor=actor, target=vm.name, client_address=client_address, **columns(policy)
    )
    updated = await ctx.refresh(vm.id, "policy")
    assert updated is not None
    return updated


async def apply(ctx: VmContext, vm_ids: Iterable[int], policy: DevicePolicy) -> list[str]:
    """Store ``policy`` for these VMs; redefine those that are off now. Returns the names still
    running (they get it at their next start)."""
    ids = list(vm_ids)
    if not ids:
        return []
    await update_vms(ctx.db, ids, **columns(policy))
    later: list[str] = []
    for vm in await vms_by_ids(ctx.db, ids):
        if vm.running:
            later.append(vm.name)
            continue
        try:
            hv = ctx.hypervisor(vm.hypervisor_id, new_work=False)
            async with ctx.overlay_lock(vm.id):
                await align_definition(hv, vm.name, boot_target(vm, hv, volatile=vm.volatile))
        except (VmError, HypervisorError) as exc:
            # Not reachable now: the next start aligns the definition anyway.
            log.info("device policy of %s applies at its next start: %s", vm.name, exc)
        ctx.publish_vm(vm, "policy")
    return later
