"""The broker: hands out desktops, keeps leases alive, returns and resets desktops.

Allocation itself is pure database work (:mod:`app.broker.allocation`); this
module adds the hypervisor side (start, reset, SPICE readiness), console grants,
live events, audit, and two lifespan tasks: the lease reaper and keep-ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from databases import Database

from app.audit import AuditLog
from app.broker import pools as pool_store
from app.broker.allocation import Allocator, Claim
from app.broker.leases import expired_lease_ids, get_lease, heartbeat_interval
from app.broker.ports import Consoles, HostRegistry, VVBuilder
from app.broker.transactions import WriteTransactions
from app.db.schema import hypervisors, pool_vms, pools, users, vms
from app.live.hub import LiveHub

log = logging.getLogger("kvmvdi.broker")

# The browser console page of the proxy (HTML5 SPICE client) for one desktop.
CONSOLE_PAGE = "/console/{vm_id}"
POWER_ACTIONS = {"shutdown": "stopping", "poweroff": "stopped", "reboot": "rebooting", "start": "starting"}
BOOT_RETRY_SECONDS = 2

Status = Literal["ready", "booting", "failover", "refused", "failed"]


@dataclass
class DesktopAnswer:
    status: Status
    pool: Any
    claim: Claim | None = None
    vm: Any = None
    refusal: str | None = None
    message: str = ""
    connection: dict[str, Any] | None = None

    def desktop(self) -> dict[str, Any] | None:
        if self.vm is None:
            return None
        return {"vm_id": self.vm.id, "name": self.vm.name, "state": self.vm.state}


@dataclass
class Broker:
    db: Database
    hub: LiveHub
    audit: AuditLog
    registry: HostRegistry | None = None
    consoles: Consoles | None = None
    build_vv: VVBuilder | None = None
    reaper_interval: float = 5.0
    spice_probe_timeout: float = 1.0
    transactions: WriteTransactions = field(init=False)
    allocator: Allocator = field(init=False)
    # Directory groups of users seen logged in, so pool events reach group members too.
    _user_groups: dict[int, frozenset[str]] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transactions = WriteTransactions(self.db)
        self.allocator = Allocator(self.transactions)

    # Lifespan

    async def start(self) -> None:
        freed = await self.allocator.free_orphans()
        if freed:
            log.warning("freed %d desktops left assigned without a lease", len(freed))
        self._tasks.append(asyncio.create_task(self._loop(self.reap_expired), name="broker-reaper"))
        self._tasks.append(asyncio.create_task(self._loop(self.keep_ready), name="broker-keep-ready"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, step: Any) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("broker background step %s failed", step.__name__)
            await asyncio.sleep(self.reaper_interval)

    # Who sees what

    def remember_groups(self, user_id: int, groups: tuple[str, ...]) -> None:
        self._user_groups[user_id] = frozenset(g.lower() for g in groups)

    async def pools_for(self, user_id: int, groups: tuple[str, ...]) -> list[dict[str, Any]]:
        allowed = await pool_store.allowed_pool_ids(self.db, user_id, groups)
        if not allowed:
            return []
        rows = await self.db.fetch_all(pools.select().where(pools.c.id.in_(allowed)).order_by(pools.c.name))
        counts = await pool_store.pool_counts(self.db, allowed)
        held = {
            row.pool_id: row
            for row in await self.db.fetch_all(
                sa.select(vms.c.id, vms.c.name, vms.c.state, pool_vms.c.pool_id)
                .select_from(vms.join(pool_vms, pool_vms.c.vm_id == vms.c.id))
                .where(vms.c.assigned_user_id == user_id)
            )
        }
        answer = []
        for pool in rows:
            size, free = counts.get(pool.id, (0, 0))
            mine = held.get(pool.id)
            answer.append(
                {
                    "id": pool.id,
                    "name": pool.name,
                    "description": pool.description,
                    "size": size,
                    "free": free,
                    "maintenance": bool(pool.maintenance),
                    "failover": pool_store.failover_of(pool),
                    "desktop": {"vm_id": mine.id, "name": mine.name, "state": mine.state} if mine else None,
                }
            )
        return answer

    async def _pool_audience(self, pool_id: int) -> set[int]:
        members = await pool_store.pool_members(self.db, pool_id)
        audience = {row.id for row in members["users"]}
        names = {row.name.lower() for row in members["groups"]}
        audience |= {uid for uid, keys in self._user_groups.items() if keys & names}
        return audience

    async def publish_pool(self, pool_id: int) -> None:
        pool = await pool_store.get_pool(self.db, pool_id)
        if pool is None:
            return
        size, free = (await pool_store.pool_counts(self.db, [pool_id]))[pool_id]
        self.hub.publish(
            "pool",
            {
                "id": pool_id,
                "name": pool.name,
                "size": size,
                "free": free,
                "maintenance": bool(pool.maintenance),
            },
            admins=True,
            user_ids=await self._pool_audience(pool_id),
        )

    def _publish_lease(self, lease: Any, state: str, **extra: Any) -> None:
        data = {"id": lease.id, "vm_id": lease.vm_id, "pool_id": lease.pool_id, "user_id": lease.user_id}
        self.hub.publish("lease", {**data, "state": state, **extra}, admins=True, user_ids={lease.user_id})

    # Handing out desktops

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
    ) -> DesktopAnswer | None:
        """Give the user a desktop of the pool; ``None`` when the pool does not exist."""
        pool = await pool_store.get_pool(self.db, pool_id)
        if pool is None:
            return None
        if pool.id not in await pool_store.allowed_pool_ids(self.db, user_id, groups):
            return DesktopAnswer(
                "refused", pool, refusal="not_allowed", message="This pool is not available to you."
            )
        claim = await self.allocator.claim(pool, user_id, client_address=client_address, another=another)
        if not claim.ok:
            return self._refused(pool, claim)
        vm = await self.db.fetch_one(vms.select().where(vms.c.id == claim.vm_id))
        assert vm is not None
        if not claim.renewed:
            await self.audit.record(
                "desktop_assigned",
                actor=username,
                target=vm.name,
                client_address=client_address,
                pool=pool.name,
                lease_id=claim.lease_id,
            )
            lease = await get_lease(self.db, claim.lease_id or 0)
            self._publish_lease(lease, "assigned", vm_name=vm.name)
            await self.publish_pool(pool.id)
        reset = (
            not claim.renewed
            and claim.previous_user_id not in (None, user_id)
            and (pool.reset_on_handout or vm.volatile)
        )
        try:
            ready = await self._ensure_running(vm, reset=reset)
        except Exception as exc:
            log.warning("desktop %s could not be started: %s", vm.name, exc)
            await self._return(claim.lease_id or 0, reason="start_failed", actor=username, reset=False)
            return DesktopAnswer(
                "failed",
                pool,
                vm=vm,
                refusal="desktop_failed",
                message=f"The desktop {vm.name} could not be started: {exc}. Try again.",
            )
        vm = await self.db.fetch_one(vms.select().where(vms.c.id == vm.id))
        if not ready:
            return DesktopAnswer("booting", pool, claim=claim, vm=vm, message="Your desktop is starting.")
        answer = DesktopAnswer("ready", pool, claim=claim, vm=vm)
        if with_connection:
            answer.connection = await self.connection(vm, pool, user_id, client_address)
        return answer

    def _refused(self, pool: Any, claim: Claim) -> DesktopAnswer:
        messages = {
            "maintenance": "This pool is in maintenance. Try again later.",
            "no_free_desktop": "All desktops of this pool are in use.",
            "all_hypervisors_down": "The servers of this pool are unavailable.",
            "desktop_limit": f"You already hold {pool.max_per_user} desktop(s) of this pool.",
        }
        refusal = claim.refusal or "no_free_desktop"
        failover = pool_store.failover_of(pool)
        if failover is not None and refusal in ("no_free_desktop", "maintenance", "all_hypervisors_down"):
            return DesktopAnswer("failover", pool, refusal=refusal, message=messages[refusal])
        return DesktopAnswer("refused", pool, refusal=refusal, message=messages[refusal])

    async def _ensure_running(self, vm: Any, *, reset: bool) -> bool:
        """Start (or power-cycle) the VM if needed; True once its SPICE port answers."""
        if self.registry is None:
            raise RuntimeError("no hypervisor connection")
        host = self.registry.get(vm.hypervisor_id)
        state = await host.domain_state(vm.name)
        if reset and state != "shutoff":
            await host.destroy(vm.name)
            state = "shutoff"
        if state in ("shutoff", "crashed"):
            await host.start(vm.name)
        elif state == "paused":
            # A suspended desktop is resumed by a restart; the user's session there is gone anyway.
            await host.destroy(vm.name)
            await host.start(vm.name)
        return await self._spice_ready(host, vm.name)

    async def _spice_ready(self, host: Any, name: str) -> bool:
        try:
            address, port = await host.spice_endpoint(name)
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), self.spice_probe_timeout
            )
        except (OSError, TimeoutError, ValueError):
            return False
        except Exception:  # the domain is not running (yet): no graphics port
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def connection(self, vm: Any, pool: Any, user_id: int, client_address: str) -> dict[str, Any]:
        """A console grant for the user's desktop, as the API's ``connection`` object."""
        if self.consoles is None:
            raise RuntimeError("the console service is not running")
        grant = await self.consoles.open(user_id=user_id, vm_id=vm.id, client_address=client_address)
        title = f"{pool.name}: {vm.name}" if pool is not None else vm.name
        return {
            "protocol": "spice",
            "host": grant.host,
            "port": grant.port,
            "password": grant.password,
            "ticket": grant.ticket,
            "proxy": grant.proxy_url,
            "title": title,
            "vv": self.build_vv(grant, title=title) if self.build_vv else "",
            "console_url": CONSOLE_PAGE.format(vm_id=vm.id),
        }

    # Leases

    async def heartbeat(self, lease_id: int, user_id: int) -> tuple[str, Any]:
        lease = await get_lease(self.db, lease_id)
        if lease is None or lease.user_id != user_id:
            return "not_found", None
        pool = await pool_store.get_pool(self.db, lease.pool_id) if lease.pool_id else None
        timeout = pool.lease_timeout_min if pool is not None else 5
        return await self.allocator.heartbeat(lease_id, user_id, timeout)

    async def heartbeat_vm(self, vm_id: int, user_id: int) -> tuple[str, Any]:
        """Heartbeat by desktop (the console page knows its VM, not its lease)."""
        from app.db.schema import leases

        row = await self.db.fetch_one(
            sa.select(leases.c.id).where(
                leases.c.vm_id == vm_id, leases.c.user_id == user_id, leases.c.ended_at.is_(None)
            )
        )
        if row is None:
            return "not_found", None
        return await self.heartbeat(row.id, user_id)

    async def release(
        self,
        lease_id: int,
        *,
        user_id: int | None,
        actor: str,
        client_address: str = "",
        reason: str = "released",
    ) -> bool:
        lease = await get_lease(self.db, lease_id)
        if lease is None or (user_id is not None and lease.user_id != user_id):
            return False
        await self._return(lease_id, reason=reason, actor=actor, client_address=client_address)
        return True

    async def reap_expired(self) -> None:
        for lease_id in await expired_lease_ids(self.db):
            await self._return(lease_id, reason="expired", actor="broker", only_if_expired=True)

    async def _return(
        self,
        lease_id: int,
        *,
        reason: str,
        actor: str,
        client_address: str = "",
        only_if_expired: bool = False,
        reset: bool | None = None,
    ) -> None:
        lease = await self.allocator.end_lease(lease_id, reason=reason, only_if_expired=only_if_expired)
        if lease is None:
            return
        vm = await self.db.fetch_one(vms.select().where(vms.c.id == lease.vm_id))
        pool = await pool_store.get_pool(self.db, lease.pool_id) if lease.pool_id else None
        self._publish_lease(lease, "ended", reason=reason)
        if self.consoles is not None:
            try:
                await self.consoles.revoke_for_vm(lease.vm_id, reason)
            except Exception:
                log.exception("revoking console tickets of VM %s failed", lease.vm_id)
        if reset is None:
            reset = bool(pool is not None and vm is not None and (pool.reset_on_handout or vm.volatile))
        clean = False
        if reset and vm is not None:
            clean = await self._power_cycle(vm)
        await self.allocator.free_vm(lease.vm_id, lease.user_id, clean=clean)
        user = await self.db.fetch_one(users.select().where(users.c.id == lease.user_id))
        await self.audit.record(
            f"lease_{reason}" if reason in ("expired", "released", "ended_by_admin") else "lease_ended",
            actor=actor,
            target=vm.name if vm is not None else str(lease.vm_id),
            client_address=client_address,
            user=user.username if user is not None else lease.user_id,
            lease_id=lease.id,
            reason=reason,
            reset=clean,
        )
        if lease.pool_id is not None:
            await self.publish_pool(lease.pool_id)

    async def _power_cycle(self, vm: Any) -> bool:
        """Force off and start again: a fresh boot (for a volatile VM, a fresh overlay)."""
        if self.registry is None:
            return False
        try:
            host = self.registry.get(vm.hypervisor_id)
            if await host.domain_state(vm.name) != "shutoff":
                await host.destroy(vm.name)
            await host.start(vm.name)
        except Exception as exc:
            log.warning("resetting %s failed: %s", vm.name, exc)
            return False
        return True

    # Power actions on one's own desktop

    async def power(
        self, vm_id: int, user_id: int, action: str, *, actor: str, client_address: str
    ) -> str | None:
        """Run ``action`` on the user's own desktop; returns the new state, or None if not theirs."""
        vm = await self.db.fetch_one(vms.select().where(vms.c.id == vm_id))
        if vm is None or vm.assigned_user_id != user_id:
            return None
        if self.registry is None:
            raise RuntimeError("no hypervisor connection")
        host = self.registry.get(vm.hypervisor_id)
        await getattr(host, {"poweroff": "destroy"}.get(action, action))(vm.name)
        await self.audit.record(
            f"desktop_{action}", actor=actor, target=vm.name, client_address=client_address
        )
        return POWER_ACTIONS[action]

    # Keep-ready

    async def keep_ready(self) -> None:
        if self.registry is None:
            return
        wanted = await self.db.fetch_all(
            pools.select().where(pools.c.keep_ready > 0, pools.c.maintenance.is_(sa.false()))
        )
        for pool in wanted:
            free = await self.db.fetch_all(
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
                    hypervisors.c.state == "up",
                    hypervisors.c.maintenance.is_(sa.false()),
                )
                .order_by(vms.c.id)
            )
            running = [vm for vm in free if vm.state == "running"]
            for vm in [vm for vm in free if vm.state != "running"][: max(0, pool.keep_ready - len(running))]:
                try:
                    host = self.registry.get(vm.hypervisor_id)
                    if await host.domain_state(vm.name) != "running":
                        await host.start(vm.name)
                        log.info("keep-ready: started %s for pool %s", vm.name, pool.name)
                except Exception as exc:
                    log.warning("keep-ready: %s could not be started: %s", vm.name, exc)

    # Admin

    async def end_session(self, lease_id: int, *, actor: str, client_address: str) -> bool:
        lease = await get_lease(self.db, lease_id)
        if lease is None or lease.ended_at is not None:
            return False
        await self._return(lease_id, reason="ended_by_admin", actor=actor, client_address=client_address)
        return True

    async def revoke_user_consoles(self, user_id: int) -> None:
        """Cut a disabled user's consoles; their leases then run out and are reaped."""
        if self.consoles is not None:
            try:
                await self.consoles.revoke_for_user(user_id, "user_disabled")
            except Exception:
                log.exception("revoking the consoles of user %s failed", user_id)

    def lease_json(self, claim: Claim, pool: Any) -> dict[str, Any]:
        return {
            "id": claim.lease_id,
            "expires_at": claim.expires_at.isoformat() + "Z" if claim.expires_at else None,
            "heartbeat_interval": heartbeat_interval(pool.lease_timeout_min),
        }
