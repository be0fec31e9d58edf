"""Powering desktops for the broker: start, reset (a fresh boot), keep-ready, users' own power actions.

Every start and stop goes through the VM service, never to the
hypervisor directly: a volatile desktop gets a fresh per-boot overlay at each
start there, and its overlay is discarded when it stops. Only reading a domain's
state goes to the hypervisor layer.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from databases import Database

from app.db.records import PoolRecord, fetch_records
from app.db.schema import hypervisors, pool_vms, pools, vms
from app.hyper import DomainNotFound, HypervisorError, HypervisorRegistry
from app.i18n import gettext as _
from app.vms.errors import Refused, VmError, domain_missing
from app.vms.records import Vm
from app.vms.service import VmService

log = logging.getLogger("kvmvdi.broker")

# Domain states in which a desktop has a running QEMU process (and a display).
RUNNING = frozenset({"running", "paused", "pmsuspended"})
# What a user may do to their own desktop, and the state the answer announces.
USER_ACTIONS = {"shutdown": "stopping", "poweroff": "stopped", "reboot": "rebooting", "start": "starting"}


class DesktopPowerError(Exception):
    """The desktop could not be started, reset or powered: ``code`` for JSON, a message for people.

    ``refused``: the desktop's own state stands in the way (its domain was removed outside the
    dashboard, its hypervisor is in maintenance ...), so asking again changes nothing until an
    administrator acts; otherwise the failure may pass (a hypervisor that did not answer).
    """

    def __init__(self, code: str, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refused = refused


class DesktopPower:
    def __init__(self, db: Database, registry: HypervisorRegistry, vms: VmService) -> None:
        self.db = db
        self.registry = registry
        self.vms = vms

    async def live_state(self, vm: Vm) -> str:
        """The domain's state as its hypervisor reports it now."""
        try:
            hypervisor = self.registry.get(vm.hypervisor_id)
            return await hypervisor.domain_state(vm.name)
        except DomainNotFound as exc:
            missing = domain_missing(vm.name, hypervisor.name)
            raise DesktopPowerError(missing.code, missing.message, refused=True) from exc
        except HypervisorError as exc:
            raise DesktopPowerError("hypervisor_unavailable", f"{vm.name}: {exc}") from exc

    async def prepare(self, vm: Vm, *, reset: bool, actor: str) -> bool:
        """Make the desktop run for its user: True when it already ran (ready now),
        False when it had to be started or power-cycled (booting now)."""
        state = await self.live_state(vm)
        if state == "running" and not reset:
            return True
        if state == "paused" and not reset:
            # Paused by an admin: "start" resumes it, its session intact.
            await self._action(vm, "start", actor=actor, tolerate="already_running")
            return True
        if vm.maintenance and state not in RUNNING:
            # Stopped for maintenance (its image is being edited ...): not started behind the admin's back.
            raise DesktopPowerError("maintenance", _("it is in maintenance; try again later"))
        # A suspended desktop is restarted: its user's session there is gone anyway.
        if state in RUNNING:
            await self._action(vm, "poweroff", actor=actor, tolerate="not_running")
        await self._action(vm, "start", actor=actor, tolerate="already_running")
        return False

    async def reset(self, vm: Vm, *, actor: str) -> None:
        """A fresh boot for the next user: force off and start again (a volatile desktop on a new
        overlay). A stopped desktop is left stopped: its next start is a fresh boot anyway. One
        behind its initial's target image version moves to it instead (a fresh boot there)."""
        try:
            if await self.move_to_target(vm, actor=actor):
                return
        except DesktopPowerError as exc:
            log.warning("%s stays on its image version for now: %s", vm.name, exc.message)
        if await self.live_state(vm) not in RUNNING:
            return
        await self._action(vm, "poweroff", actor=actor, tolerate="not_running")
        await self._action(vm, "start", actor=actor, tolerate="already_running")

    async def move_to_target(self, vm: Vm, *, actor: str) -> bool:
        """A VDI desktop nobody uses moves to its initial's target image version if it is behind
        (forced off and started again when it ran); True when it moved."""
        try:
            return await self.vms.images.move_desktop(vm.id, actor=actor)
        except VmError as exc:
            raise DesktopPowerError(exc.code, exc.message) from exc

    async def user_action(self, vm: Vm, action: str, *, actor: str, client_address: str) -> str:
        """A user's power action on their own desktop; the state announced to them."""
        await self._action(vm, action, actor=actor, client_address=client_address)
        return USER_ACTIONS[action]

    async def _action(
        self, vm: Vm, action: str, *, actor: str, client_address: str = "", tolerate: str = ""
    ) -> None:
        try:
            await self.vms.power(vm.id, action, actor=actor, client_address=client_address)
        except Refused as exc:
            if not tolerate or exc.code != tolerate:
                raise DesktopPowerError(exc.code, exc.message, refused=True) from exc
        except VmError as exc:
            raise DesktopPowerError(exc.code, exc.message) from exc

    async def keep_ready(self) -> None:
        """Start free desktops until each pool has ``keep_ready`` of them running."""
        accepting = {hv.id for hv in self.registry.accepting_work()}
        wanted = await fetch_records(
            self.db,
            PoolRecord,
            pools.select().where(pools.c.keep_ready > 0, pools.c.maintenance.is_(sa.false())),
        )
        for pool in wanted:
            free = await fetch_records(
                self.db,
                Vm,
                sa.select(vms)
                .select_from(
                    pool_vms.join(vms, vms.c.id == pool_vms.c.vm_id).join(
                        hypervisors, hypervisors.c.id == vms.c.hypervisor_id
                    )
                )
                .where(
                    pool_vms.c.pool_id == pool.id,
                    vms.c.assigned_user_id.is_(None),
                    vms.c.maintenance.is_(sa.false()),
                    vms.c.locked.is_(sa.false()),
                    vms.c.operation_id.is_(None),
                    vms.c.hypervisor_id.in_(accepting),
                )
                .order_by(vms.c.id),
            )
            running = sum(1 for vm in free if vm.state == "running")
            stopped = [vm for vm in free if vm.state != "running"]
            for vm in stopped[: max(0, pool.keep_ready - running)]:
                try:
                    await self._action(vm, "start", actor="broker", tolerate="already_running")
                    log.info("keep-ready: started %s for pool %s", vm.name, pool.name)
                except DesktopPowerError as exc:
                    log.warning("keep-ready: %s could not be started: %s", vm.name, exc.message)
