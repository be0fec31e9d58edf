"""The broker: hands out desktops, keeps leases alive, returns and resets desktops.

Allocation itself is pure database work (:mod:`app.broker.allocation`); this
module adds the running side: starting or resetting the desktop through the VM
service (:mod:`app.broker.power`), console grants from the console service,
live events, audit, and two background duties (run by one replica at a time, see
:mod:`app.cluster.duties`): the lease reaper (:mod:`app.broker.upkeep`, which counts
an open console session, on any replica, as a heartbeat) and keep-ready.

A client only ever gets a console for a desktop it holds an active lease on;
when a lease ends, every console of that desktop is revoked before the desktop
is reset and returned to its pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa
from databases import Database

from app.audit import AuditLog
from app.broker import pools as pool_store
from app.broker.allocation import Allocator, Claim
from app.broker.catalog import PoolCatalog
from app.broker.leases import active_lease, get_lease, heartbeat_interval
from app.broker.power import DesktopPower, DesktopPowerError
from app.broker.snapshots import DesktopSnapshots
from app.broker.transactions import WriteTransactions
from app.broker.upkeep import LeaseUpkeep
from app.clock import Clock
from app.cluster.duties import Duties, every
from app.db.records import Identified, PoolRecord, fetch_record
from app.db.schema import leases, vms
from app.hyper import HypervisorRegistry
from app.i18n import gettext as _
from app.i18n import ngettext
from app.live.hub import LiveHub
from app.observers import Observers
from app.proxy.service import ConsoleError, ConsoleGrant, ConsoleService
from app.proxy.vv import build_vv, connection_json
from app.vms.records import Vm, get_vm
from app.vms.service import VmService

log = logging.getLogger("kvmvdi.broker")

# The client portal's HTML5 console of one's own desktop.
CONSOLE_PAGE = "/client/desktops/{vm_id}/console"
# A desktop that was just started answers "booting"; the client asks again after this.
BOOT_RETRY_SECONDS = 1
# Several replicas: a desktop assigned without an active lease whose last lease ended this
# long ago is an orphan (a return interrupted by a replica's death), checked this often.
ORPHAN_GRACE = timedelta(minutes=5)
ORPHAN_CHECK = 60.0

Status = Literal["ready", "booting", "failover", "refused", "failed"]


@dataclass
class DesktopAnswer:
    status: Status
    pool: PoolRecord
    claim: Claim | None = None
    vm: Vm | None = None
    refusal: str | None = None
    message: str = ""
    connection: dict[str, Any] | None = None
    # A failed desktop whose failure may pass (asking again may work); else the admin must act.
    transient: bool = True

    def desktop(self) -> dict[str, Any] | None:
        if self.vm is None:
            return None
        # A desktop just (re)started may not have its "running" event stored yet; a ready one
        # was just seen running on its hypervisor, whatever the table still says.
        state = {"booting": "starting", "ready": "running"}.get(self.status, self.vm.state)
        return {"vm_id": self.vm.id, "name": self.vm.name, "state": state}


@dataclass(frozen=True)
class DesktopRequest:
    """One answered desktop request, as listeners (metrics, alerts) see it."""

    pool_id: int
    pool_name: str
    status: Status
    # no_free_desktop, maintenance, all_hypervisors_down, desktop_limit, not_allowed, desktop_failed ...
    refusal: str | None
    seconds: float


# Called after each answered request; must not block (count, enqueue, nothing more).
RequestListener = Callable[[DesktopRequest], None]


class Broker:
    def __init__(
        self,
        *,
        db: Database,
        hub: LiveHub,
        audit: AuditLog,
        registry: HypervisorRegistry,
        consoles: ConsoleService,
        vms: VmService,
        clock: Clock,
        duties: Duties | None = None,
        build_vv: Callable[..., str] = build_vv,
        reaper_interval: float = 5.0,
        request_listeners: Sequence[RequestListener] = (),
    ) -> None:
        self.db = db
        self._request_listeners = Observers("desktop request", request_listeners)
        self.hub = hub
        self.audit = audit
        self.registry = registry
        self.consoles = consoles
        self.build_vv = build_vv
        self.reaper_interval = reaper_interval
        self.transactions = WriteTransactions(db)
        self.allocator = Allocator(self.transactions, clock=clock)
        self.catalog = PoolCatalog(db, hub)
        self.power = DesktopPower(db, registry, vms)
        self.snapshots = DesktopSnapshots(db, self.power)
        self.leases = LeaseUpkeep(
            db=db,
            audit=audit,
            allocator=self.allocator,
            consoles=consoles,
            power=self.power,
            catalog=self.catalog,
        )
        # Without duties handed in, the broker holds its own (one process, from the start).
        self._own_duties = duties is None
        self.duties = duties or Duties()

    # Lifespan

    async def start(self) -> None:
        interval = self.reaper_interval
        if not self.duties.clustered:
            # One process: whatever is assigned without a lease was left by its previous run.
            await self._free_orphans()
        else:
            # Other replicas may be returning a desktop right now: only orphans left for a while.
            self.duties.add(
                "free-orphans",
                lambda: every(
                    ORPHAN_CHECK, lambda: self._free_orphans(ORPHAN_GRACE), what="orphaned desktops"
                ),
            )
        self.duties.add(
            "lease-reaper", lambda: every(interval, self.leases.reap_expired, what="lease reaper")
        )
        self.duties.add("keep-ready", lambda: every(interval, self.power.keep_ready, what="keep-ready"))
        if self._own_duties:
            await self.duties.start()

    async def stop(self) -> None:
        """The reaper and keep-ready are duties: they stop with the duties (the cluster's, or its own)."""
        if self._own_duties:
            await self.duties.stop()

    async def _free_orphans(self, grace: timedelta | None = None) -> None:
        freed = await self.allocator.free_orphans(grace=grace)
        if freed:
            log.warning("freed %d desktops left assigned without a lease", len(freed))

    # Handing out desktops

    def _accepting(self) -> set[int]:
        """Hypervisors that may take new work now: up, connected, not in maintenance (not fenced)."""
        return {hv.id for hv in self.registry.accepting_work()}

    async def request_desktop(
        self,
        *,
        pool_id: int,
        user_id: int,
        username: str,
        groups: tuple[str, ...],
        client_address: str,
        another: bool = False,
        with_connection: bool = True,
        gateway_host: str | None = None,
    ) -> DesktopAnswer | None:
        """Give the user a desktop of the pool; ``None`` when the pool does not exist."""
        started = time.monotonic()
        answer = await self._request_desktop(
            pool_id=pool_id,
            user_id=user_id,
            username=username,
            groups=groups,
            client_address=client_address,
            another=another,
            with_connection=with_connection,
            gateway_host=gateway_host,
        )
        if answer is not None and self._request_listeners:
            self._request_listeners(
                DesktopRequest(
                    pool_id=answer.pool.id,
                    pool_name=answer.pool.name,
                    status=answer.status,
                    refusal=answer.refusal,
                    seconds=time.monotonic() - started,
                )
            )
        return answer

    async def _request_desktop(
        self,
        *,
        pool_id: int,
        user_id: int,
        username: str,
        groups: tuple[str, ...],
        client_address: str,
        another: bool,
        with_connection: bool,
        gateway_host: str | None,
    ) -> DesktopAnswer | None:
        pool = await pool_store.get_pool(self.db, pool_id)
        if pool is None:
            return None
        if pool.id not in await pool_store.allowed_pool_ids(self.db, user_id, groups):
            return DesktopAnswer(
                "refused", pool, refusal="not_allowed", message=_("This pool is not available to you.")
            )

        async def assigned(vm_id: int, lease_id: int) -> None:
            # In the hand-out's own transaction: no lease without its audit record, nor the reverse.
            name = await self.db.fetch_val(sa.select(vms.c.name).where(vms.c.id == vm_id))
            await self.audit.record(
                "desktop_assigned",
                actor=username,
                target=str(name),
                client_address=client_address,
                pool=pool.name,
                pool_id=pool.id,
                lease_id=lease_id,
            )

        claim = await self.allocator.claim(
            pool,
            user_id,
            client_address=client_address,
            another=another,
            hypervisor_ids=self._accepting(),
            on_assigned=assigned,
        )
        if not claim.ok:
            refused = self._refused(pool, claim)
            # Who was refused, and why: the usage report counts the pools that ran out of desktops.
            await self.audit.record(
                "desktop_refused",
                actor=username,
                target=pool.name,
                client_address=client_address,
                pool_id=pool.id,
                refusal=refused.refusal,
            )
            return refused
        vm = await self._vm(claim.vm_id or 0)
        if not claim.renewed:
            lease = await get_lease(self.db, claim.lease_id or 0)
            if lease is not None:
                self.catalog.publish_lease(lease, "assigned", vm_name=vm.name)
            await self.catalog.publish_pool(pool.id)
        # A desktop that served someone else and was not reset on its way back is reset now.
        reset = (
            not claim.renewed
            and claim.previous_user_id not in (None, user_id)
            and (pool.reset_on_handout or vm.volatile)
        )
        if not claim.renewed and (reset or vm.state != "running"):
            # It boots afresh for this user anyway: on its image's target version. A running
            # desktop that needs no reset is handed out as it is and moves when returned.
            try:
                reset = reset and not await self.power.move_to_target(vm, actor=username)
            except DesktopPowerError as exc:
                log.warning("%s stays on its image version for now: %s", vm.name, exc.message)
        try:
            ready = await self.power.prepare(vm, reset=reset, actor=username)
        except DesktopPowerError as exc:
            log.warning("desktop %s could not be started: %s", vm.name, exc.message)
            if not claim.renewed:
                await self.leases.return_desktop(
                    claim.lease_id or 0, reason="start_failed", actor=username, reset=False
                )
            if exc.refused:
                message = _("The desktop {name} cannot be started: {message}. Tell your administrator.")
            else:
                message = _("The desktop {name} could not be started: {message}. Try again.")
            return DesktopAnswer(
                "failed",
                pool,
                vm=vm,
                refusal="desktop_failed",
                message=message.format(name=vm.name, message=exc.message),
                transient=not exc.refused,
            )
        if not ready:
            return DesktopAnswer("booting", pool, claim=claim, vm=vm, message=_("Your desktop is starting."))
        answer = DesktopAnswer("ready", pool, claim=claim, vm=vm)
        if with_connection:
            try:
                answer.connection = await self.connection(
                    vm, pool, user_id, client_address, gateway_host=gateway_host
                )
            except ConsoleError as exc:
                if exc.code == "vm_not_running":
                    return DesktopAnswer("booting", pool, claim=claim, vm=vm, message=exc.message)
                if not claim.renewed:
                    # The answer carries no lease to heartbeat or release: do not hold the desktop
                    # until the lease runs out. It was started, not used: no reset.
                    await self.leases.return_desktop(
                        claim.lease_id or 0, reason="console_failed", actor=username, reset=False
                    )
                return DesktopAnswer(
                    "failed", pool, vm=vm, refusal="console_unavailable", message=exc.message
                )
        return answer

    def _refused(self, pool: PoolRecord, claim: Claim) -> DesktopAnswer:
        messages = {
            "maintenance": _("This pool is in maintenance. Try again later."),
            "no_free_desktop": _("All desktops of this pool are in use."),
            "all_hypervisors_down": _("The servers of this pool are unavailable."),
            "desktop_limit": ngettext(
                "You already hold {count} desktop of this pool.",
                "You already hold {count} desktops of this pool.",
                pool.max_per_user,
            ).format(count=pool.max_per_user),
        }
        refusal = claim.refusal or "no_free_desktop"
        failover = pool_store.failover_of(pool)
        if failover is not None and refusal in ("no_free_desktop", "maintenance", "all_hypervisors_down"):
            return DesktopAnswer("failover", pool, refusal=refusal, message=messages[refusal])
        return DesktopAnswer("refused", pool, refusal=refusal, message=messages[refusal])

    async def _vm(self, vm_id: int) -> Vm:
        vm = await get_vm(self.db, vm_id)
        if vm is None:
            raise LookupError(f"VM {vm_id} does not exist")
        return vm

    # Consoles

    async def open_console(
        self, vm_id: int, user_id: int, *, client_address: str, gateway_host: str | None = None
    ) -> ConsoleGrant:
        """A console of a desktop the user holds an active lease on; :class:`ConsoleError` otherwise."""
        refused = ConsoleError("not_your_desktop", _("This desktop is not assigned to you."), 403)
        if await active_lease(self.db, vm_id, user_id) is None:
            raise refused
        grant = await self.consoles.open(
            user_id=user_id, vm_id=vm_id, client_address=client_address, gateway_host=gateway_host
        )
        # The lease may have ended while the console opened; its revocation may have run
        # before this ticket existed, so this ticket is revoked here.
        if await active_lease(self.db, vm_id, user_id) is None:
            await self.consoles.revoke_ticket(grant.ticket_id, "reassigned")
            raise refused
        return grant

    async def connection(
        self,
        vm: Vm,
        pool: PoolRecord | None,
        user_id: int,
        client_address: str,
        *,
        gateway_host: str | None = None,
    ) -> dict[str, Any]:
        """A console grant for the user's desktop, as the API's ``connection`` object."""
        grant = await self.open_console(
            vm.id, user_id, client_address=client_address, gateway_host=gateway_host
        )
        title = f"{pool.name}: {vm.name}" if pool is not None else vm.name
        # The viewer offers USB redirection only where the desktop's device policy allows it.
        vv = self.build_vv(grant, title=title, usb_redirect=int(vm.usb_redirect) > 0)
        return connection_json(grant, title=title, vv=vv, console_url=CONSOLE_PAGE.format(vm_id=vm.id))

    # Power actions on one's own desktop

    async def user_power(
        self, vm_id: int, user_id: int, action: str, *, actor: str, client_address: str
    ) -> str | None:
        """Run ``action`` on a desktop the user holds; the new state, or None if not theirs.

        Raises :class:`DesktopPowerError` when the VM service refuses or fails it.
        """
        if await active_lease(self.db, vm_id, user_id) is None:
            return None
        vm = await self._vm(vm_id)
        return await self.power.user_action(vm, action, actor=actor, client_address=client_address)

    # Admin

    async def end_session(self, lease_id: int, *, actor: str, client_address: str) -> bool:
        """An admin ends a session: consoles cut, the desktop reset (per its pool) and returned."""
        lease = await get_lease(self.db, lease_id)
        if lease is None or lease.ended_at is not None:
            return False
        await self.leases.return_desktop(
            lease_id, reason="ended_by_admin", actor=actor, client_address=client_address
        )
        still_held = await fetch_record(
            self.db,
            Identified,
            sa.select(leases.c.id).where(leases.c.user_id == lease.user_id, leases.c.ended_at.is_(None)),
        )
        if still_held is None:
            # Nothing of this user stays open: no console ticket of theirs either.
            await self.consoles.revoke_for_user(lease.user_id, "ended_by_admin")
        return True

    async def recover(self) -> None:
        """After a database outage: free the desktops whose return it cut short (lease ended, desktop
        still assigned); returns still in progress finish by themselves."""
        # With several replicas, another one may be returning a desktop right now: only orphans
        # left for a while.
        grace = ORPHAN_GRACE if self.duties.clustered else None
        freed = await self.allocator.free_orphans(besides=self.leases.returning, grace=grace)
        if freed:
            log.warning("freed %d desktops whose return a database outage cut short", len(freed))

    async def revoke_user_consoles(self, user_id: int) -> None:
        """Cut a disabled user's consoles; their leases then run out and are reaped."""
        try:
            await self.consoles.revoke_for_user(user_id, "user_disabled")
        except Exception:
            log.exception("revoking the consoles of user %s failed", user_id)

    def lease_json(self, claim: Claim, pool: PoolRecord) -> dict[str, Any]:
        return {
            "id": claim.lease_id,
            "expires_at": claim.expires_at.isoformat() + "Z" if claim.expires_at else None,
            "heartbeat_interval": heartbeat_interval(pool.lease_timeout_min),
        }
