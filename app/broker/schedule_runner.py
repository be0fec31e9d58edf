"""Runs the pools' schedules: once per start, however many dashboards share the database.

:meth:`ScheduleRunner.tick` is one pass, on the injected clock: each enabled schedule whose
latest start has not been run is *claimed* (its ``last_run_at`` moved to that start in one
write transaction that reads the row under a lock, so of several dashboards exactly one
wins) and then run; a keep-ready window that is open is also topped up at every pass. A
start missed by more than :data:`MISSED_AFTER` (the dashboard was down) is recorded as
missed, not run late, except a keep-ready window still open. Each run is audited and its
outcome kept on the schedule (last run, status, result) for the pool page and the API.

Every ``interval`` seconds (or at once when woken) :meth:`tick` runs as a background duty
(:mod:`app.cluster.duties`): with several replicas only the one holding the duty lease looks,
so a keep-ready window is topped up by one replica, not by each; the claim keeps each start
to one run anyway. Waking (a schedule saved on any replica) reaches the holder over the
cluster bus. Without duties handed in, the runner loops on its own from :meth:`start`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from databases import Database

from app.audit import AuditLog
from app.background import Periodic
from app.broker.power import RUNNING, DesktopPower, DesktopPowerError
from app.broker.schedules import Schedule, ScheduleStore
from app.broker.transactions import WriteTransactions
from app.clock import Clock
from app.cluster.bus import Bus, LocalBus
from app.cluster.duties import Duties
from app.db.health import log_failure
from app.db.schema import leases, pool_schedules, pool_vms, pools, vms
from app.hyper import HypervisorError, HypervisorRegistry
from app.vms.errors import VmError
from app.vms.service import VmService
from app.vms.sync import STOPPED_STATES

log = logging.getLogger("kvmvdi.broker.schedules")

ACTOR = "schedule"
# Cluster bus channel: a schedule changed on some replica, the duty holder looks now.
WAKE_CHANNEL = "pool-schedules-wake"
# A start the dashboard missed by more than this is not run late (a 02:00 power-off at 09:00).
MISSED_AFTER = timedelta(minutes=30)


class ScheduleRunner:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        time_zone: ZoneInfo,
        audit: AuditLog,
        registry: HypervisorRegistry,
        power: DesktopPower,
        vms: VmService,
        interval: float = 30.0,
        duties: Duties | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.time_zone = time_zone
        self.audit = audit
        self.registry = registry
        self.power = power
        self.vms = vms
        self.interval = interval
        self.store = ScheduleStore(db)
        self._transactions = WriteTransactions(db)
        self._duties = duties
        self._bus = bus or LocalBus()
        self._periodic = Periodic("pool schedules", self.tick, interval)
        self._bus.subscribe(WAKE_CHANNEL, lambda _message: self._periodic.wake())

    # Lifespan

    async def start(self) -> None:
        if self._duties is not None:
            self._duties.add("pool-schedules", self._periodic.run)
        else:
            await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def wake(self) -> None:
        """Look at the schedules now (one was saved, or a test moved the clock), wherever they run."""
        self._periodic.wake()
        self._bus.publish(WAKE_CHANNEL, {})

    # One pass

    async def tick(self) -> list[tuple[int, str]]:
        """Run what is due now; (schedule id, status) of each run this pass made."""
        now = self.clock.now()
        ran: list[tuple[int, str]] = []
        for schedule in await self.store.list(enabled_only=True):
            start = schedule.when.latest(now, self.time_zone)
            window = schedule.when.open_window(now, self.time_zone)
            due = start is not None and (schedule.last_run_at is None or schedule.last_run_at < start)
            # A start before the schedule existed is not its to run (nor "missed"), unless it
            # opened a keep-ready window that is open now.
            if due and start is not None and start < schedule.created_at and window is None:
                due = False
            if due and start is not None:
                if not await self._claim(schedule.id, start):
                    continue  # another dashboard runs it
                if now - start > MISSED_AFTER and window is None:
                    result = f"missed: the dashboard was not running at {self._local(start)}"
                    await self.store.finish(schedule.id, status="missed", result=result, now=now)
                    await self._audit(schedule, "missed", result)
                    ran.append((schedule.id, "missed"))
                    continue
                status, result = await self._run(schedule)
                await self.store.finish(schedule.id, status=status, result=result, now=self.clock.now())
                await self._audit(schedule, status, result)
                ran.append((schedule.id, status))
            elif window is not None and schedule.kind == "keep_ready":
                # The window is open and its opening was run: keep the count up (quietly, unless
                # it had to start something: then the outcome says so).
                status, result = await self._run(schedule, top_up=True)
                if result:
                    await self.store.finish(schedule.id, status=status, result=result, now=self.clock.now())
                    await self._audit(schedule, status, result)
        return ran

    def _local(self, moment: datetime) -> str:
        return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(self.time_zone).strftime("%Y-%m-%d %H:%M %Z")

    async def _claim(self, schedule_id: int, start: datetime) -> bool:
        """Move the schedule's last run to ``start`` unless a run of it (or later) is recorded."""
        async with self._transactions.begin() as conn:
            row = await conn.fetch_one(
                sa.select(pool_schedules.c.last_run_at)
                .where(pool_schedules.c.id == schedule_id)
                .with_for_update()
            )
            last_run = row._mapping["last_run_at"] if row is not None else None
            if row is None or (last_run is not None and last_run >= start):
                return False
            await conn.execute(
                pool_schedules.update()
                .where(pool_schedules.c.id == schedule_id)
                .values(last_run_at=start, last_status="running", last_result="", last_finished_at=None)
            )
            return True

    async def _audit(self, schedule: Schedule, status: str, result: str) -> None:
        pool = await self.db.fetch_one(sa.select(pools.c.name).where(pools.c.id == schedule.pool_id))
        await self.audit.record(
            "pool_schedule_run",
            actor=ACTOR,
            target=str(pool._mapping["name"]) if pool is not None else f"pool {schedule.pool_id}",
            schedule=schedule.id,
            kind=schedule.kind,
            status=status,
            result=result,
        )

    async def _run(self, schedule: Schedule, *, top_up: bool = False) -> tuple[str, str]:
        """Do what the schedule says; (status ok|failed, what happened in a sentence)."""
        try:
            if schedule.kind == "keep_ready":
                return await self._keep_ready(schedule, top_up=top_up)
            if schedule.kind == "power_off":
                return await self._each_free(schedule, "shutdown", "shut down")
            if schedule.kind == "reset":
                return await self._each_free(schedule, "reset", "reset")
            return await self._populate(schedule)
        except Exception as exc:  # the outcome must be recorded whatever went wrong
            log_failure(log, "pool schedule %d failed", schedule.id)
            return "failed", f"failed: {exc}"

    async def _free_desktops(self, pool_id: int) -> list[Any]:
        """The pool's desktops nobody holds (no user, no active lease), not in maintenance or busy."""
        held = sa.select(leases.c.vm_id).where(leases.c.ended_at.is_(None))
        return list(
            await self.db.fetch_all(
                sa.select(vms)
                .select_from(pool_vms.join(vms, vms.c.id == pool_vms.c.vm_id))
                .where(
                    pool_vms.c.pool_id == pool_id,
                    vms.c.assigned_user_id.is_(None),
                    vms.c.id.not_in(held),
                    vms.c.maintenance.is_(sa.false()),
                    vms.c.operation_id.is_(None),
                )
                .order_by(vms.c.id)
            )
        )

    async def _keep_ready(self, schedule: Schedule, *, top_up: bool) -> tuple[str, str]:
        accepting = {hv.id for hv in self.registry.accepting_work()}
        free = await self._free_desktops(schedule.pool_id)
        running = sum(1 for vm in free if vm.state == "running")
        startable = [vm for vm in free if vm.state not in RUNNING and not vm.locked]
        wanted = max(0, schedule.spec.count - running)
        started: list[str] = []
        failed: dict[str, str] = {}
        for vm in startable:
            if len(started) >= wanted:
                break
            if vm.hypervisor_id not in accepting:
                failed[vm.name] = "its hypervisor takes no new work"
                continue
            try:
                await self.vms.power(vm.id, "start", actor=ACTOR)
                started.append(vm.name)
            except VmError as exc:
                failed[vm.name] = exc.message
        if top_up and not started and not failed:
            return "ok", ""
        short = wanted - len(started)
        result = f"{running + len(started)} of {schedule.spec.count} free desktops started"
        result += f" ({len(started)} just now)" if started else ""
        if short > 0:
            result += f"; {short} short: not enough free desktops"
        if failed:
            reasons = ", ".join(f"{name} ({why})" for name, why in sorted(failed.items()))
            result += f"; could not start {reasons}"
        return ("failed" if failed and not started else "ok"), result

    async def _each_free(self, schedule: Schedule, action: str, verb: str) -> tuple[str, str]:
        free = [vm for vm in await self._free_desktops(schedule.pool_id) if vm.state in RUNNING]
        done: list[str] = []
        forced: list[str] = []
        failed: dict[str, str] = {}
        limit = asyncio.Semaphore(max(1, self.vms.ctx.settings.power_concurrency))

        async def one(vm: Any) -> None:
            async with limit:
                try:
                    if action == "reset":
                        await self.power.reset(vm, actor=ACTOR)
                    elif not await self._shut_down(vm):
                        forced.append(vm.name)
                    done.append(vm.name)
                except (VmError, DesktopPowerError, HypervisorError) as exc:
                    failed[vm.name] = getattr(exc, "message", str(exc))

        await asyncio.gather(*(one(vm) for vm in free))
        held = await self._held_count(schedule.pool_id)
        result = f"{verb} {len(done)} free desktop{'s' if len(done) != 1 else ''}"
        if forced:
            grace = self.vms.ctx.settings.shutdown_grace
            result += f" ({len(forced)} forced off: no answer to the shutdown within {grace:g} s)"
        if held:
            result += f"; {held} held by users left alone"
        if failed:
            result += "; failed: " + ", ".join(f"{name} ({why})" for name, why in sorted(failed.items()))
        return ("failed" if failed else "ok"), result

    async def _shut_down(self, vm: Any) -> bool:
        """Shut the desktop down (guest agent, else ACPI); forced off after ``vms.shutdown_grace``
        seconds without an answer. True when it shut down by itself."""
        await self.vms.power(vm.id, "shutdown", actor=ACTOR)
        hv = self.vms.ctx.hypervisor(vm.hypervisor_id, new_work=False)
        grace = self.vms.ctx.settings.shutdown_grace
        if await self.vms.ctx.states.wait_for(hv.id, vm.name, STOPPED_STATES, within=grace, hv=hv):
            return True
        await self.vms.power(vm.id, "poweroff", actor=ACTOR)
        return False

    async def _held_count(self, pool_id: int) -> int:
        held = sa.select(leases.c.vm_id).where(leases.c.ended_at.is_(None))
        count = await self.db.fetch_val(
            sa.select(sa.func.count())
            .select_from(pool_vms.join(vms, vms.c.id == pool_vms.c.vm_id))
            .where(
                pool_vms.c.pool_id == pool_id,
                sa.or_(vms.c.assigned_user_id.is_not(None), vms.c.id.in_(held)),
            )
        )
        return int(count or 0)

    async def _populate(self, schedule: Schedule) -> tuple[str, str]:
        members = await self.db.fetch_all(
            sa.select(vms.c.id, vms.c.parent_id, vms.c.assigned_user_id, vms.c.name)
            .select_from(pool_vms.join(vms, vms.c.id == pool_vms.c.vm_id))
            .where(pool_vms.c.pool_id == schedule.pool_id, vms.c.kind == "vdi", vms.c.parent_id.is_not(None))
        )
        initials = sorted({int(row._mapping["parent_id"]) for row in members})
        active = {
            int(row._mapping["vm_id"])
            for row in await self.db.fetch_all(sa.select(leases.c.vm_id).where(leases.c.ended_at.is_(None)))
        }
        started: list[int] = []
        skipped: list[str] = []
        for initial_id in initials:
            children = await self.db.fetch_all(sa.select(vms).where(vms.c.parent_id == initial_id))
            rows = [row._mapping for row in children]
            held = [row["name"] for row in rows if row["assigned_user_id"] is not None or row["id"] in active]
            if held:
                skipped.append(f"initial #{initial_id}: {len(held)} desktop(s) held ({', '.join(held[:5])})")
                continue
            try:
                started.append(await self.vms.populate(initial_id, actor=ACTOR))
            except VmError as exc:
                skipped.append(f"initial #{initial_id}: {exc.message}")
        result = f"populate started for {len(started)} initial machine(s)"
        if started:
            result += " (operations " + ", ".join(f"#{op}" for op in started) + ")"
        if skipped:
            result += "; not populated: " + "; ".join(skipped)
        return ("failed" if skipped and not started else "ok"), result
