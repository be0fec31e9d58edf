"""Background duties, run by exactly one replica: the holder of the duty lease.

The duties are the lease reaper, keep-ready starts, thumbnails, recording hypervisor
and VM state (fencing decisions), interrupting the operations of a replica that died,
freeing orphaned desktops. Components register them here; :class:`Duties` runs them
while this replica holds the lease and cancels them the moment it may no longer.

The lease (:class:`DutyLease`) is a row of ``cluster_leases`` with a holder and an
expiry in the database's clock, taken or renewed only in a transaction that writes
the row: on Galera two replicas taking it through two nodes both write it, and one of
them fails certification. (``GET_LOCK`` would not do: Galera does not replicate it.)
The holder renews it every heartbeat; it believes it holds it until ``ttl`` minus one
heartbeat after the moment it *started* its last successful renewal, which is always
before the row expires for the others. A replica that stops cleanly gives it up.

Without a cluster there is no lease: the one process holds the duties from the start.
A console-only replica (``--role console``) never holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.cluster.dbclock import ms, now_ms
from app.db.health import DatabaseUnavailable
from app.db.records import Record, fetch_record
from app.db.retry import transaction
from app.db.schema import cluster_leases

log = logging.getLogger("kvmvdi.cluster.duties")

DUTY_LEASE = "duties"

Duty = Callable[[], Coroutine[Any, Any, None]]
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class DutyLeaseRecord(Record):
    __table__ = cluster_leases

    name: str
    holder: str
    epoch: int
    acquired_ms: int
    expires_ms: int


@dataclass(frozen=True)
class _LeaseLeft(DutyLeaseRecord):
    # Milliseconds until it expires by the database's clock; negative once expired.
    left_ms: int


@dataclass(frozen=True)
class _LeaseClaim(Record):
    holder: str
    epoch: int
    expires_ms: int
    now_ms: int


@dataclass(frozen=True)
class LeaseState:
    name: str
    holder: str
    epoch: int
    expires_in: float  # seconds by the database's clock; negative once expired


async def read_lease(db: Database, name: str = DUTY_LEASE) -> LeaseState | None:
    now = now_ms(db.url.dialect)
    row = await fetch_record(
        db,
        _LeaseLeft,
        sa.select(cluster_leases, (cluster_leases.c.expires_ms - now).label("left_ms")).where(
            cluster_leases.c.name == name
        ),
    )
    if row is None:
        return None
    return LeaseState(row.name, row.holder, row.epoch, row.left_ms / 1000)


class DutyLease:
    """The lease row; :meth:`claim` takes or renews it for ``holder``."""

    def __init__(self, db: Database, *, holder: str, ttl: float, name: str = DUTY_LEASE) -> None:
        self._db = db
        self.holder = holder
        self.ttl = ttl
        self.name = name
        self.epoch = 0

    async def claim(self) -> bool:
        """Take the lease if it is free or expired, renew it if it is ours; whether we hold it now.

        Raises when the database refuses (a lost certification included): not held then.
        """
        table = cluster_leases
        now = now_ms(self._db.url.dialect)
        until = now + ms(self.ttl)
        async with transaction(self._db) as conn:
            row = await fetch_record(
                conn,
                _LeaseClaim,
                sa.select(table.c.holder, table.c.epoch, table.c.expires_ms, now.label("now_ms"))
                .where(table.c.name == self.name)
                .with_for_update(),
            )
            if row is None:
                await conn.execute(
                    table.insert().values(
                        name=self.name, holder=self.holder, epoch=1, acquired_ms=now, expires_ms=until
                    )
                )
                self.epoch = 1
                return True
            epoch = row.epoch
            if row.holder == self.holder:
                await conn.execute(
                    table.update()
                    .where(table.c.name == self.name, table.c.epoch == epoch)
                    .values(expires_ms=until)
                )
                self.epoch = epoch
                return True
            if row.expires_ms > row.now_ms:
                return False
            await conn.execute(
                table.update()
                .where(table.c.name == self.name, table.c.epoch == epoch)
                .values(holder=self.holder, epoch=epoch + 1, acquired_ms=now, expires_ms=until)
            )
            self.epoch = epoch + 1
            return True

    async def release(self) -> None:
        """Give the lease up (clean stop): another replica takes it at its next heartbeat."""
        await self._db.execute(
            cluster_leases.update()
            .where(cluster_leases.c.name == self.name, cluster_leases.c.holder == self.holder)
            .values(expires_ms=0)
        )


class Duties:
    """Runs the registered duties while this replica holds the duty lease (always without one)."""

    def __init__(self, *, lease: DutyLease | None = None, margin: float = 1.0, passive: bool = False) -> None:
        self._lease = lease
        self._margin = margin
        # Passive: this replica never runs the duties (a console-only replica).
        self._passive = passive
        self._duties: dict[str, Duty] = {}
        self._gained: list[Hook] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._started = False
        # One process holds its duties from the start (its state is recorded from the first event).
        self.held = lease is None and not passive
        # How many times this replica took the duties over (tests, `kvm-vdi check`).
        self.gained_count = 0

    @property
    def clustered(self) -> bool:
        return self._lease is not None or self._passive

    def add(self, name: str, duty: Duty) -> None:
        """``duty()`` runs (a loop) while the lease is held; cancelled when it is lost."""
        self._duties[name] = duty
        if self.held and self._started:
            self._launch(name)

    def running(self) -> list[str]:
        """The duties running on this replica now (``/healthz``; none on a replica not holding them)."""
        return sorted(name for name, task in self._tasks.items() if not task.done())

    def on_gained(self, hook: Hook) -> None:
        """``await hook()`` each time this replica takes the duties over (re-record shared state)."""
        self._gained.append(hook)

    async def start(self) -> None:
        """Run the duties (one process), or take part in the lease (the heartbeat calls :meth:`tick`)."""
        self._started = True
        if self._lease is None and not self._passive:
            self.held = True
            for name in self._duties:
                self._launch(name)

    async def tick(self) -> None:
        """One attempt to take or renew the lease (the cluster's heartbeat calls it)."""
        if self._lease is None or not self._started:
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            holds = await self._lease.claim()
        except Exception as exc:
            # Unknown: keep what we believe until it runs out (the expiry timer decides).
            log.info("duty lease not renewed this time: %s", exc)
            return
        if not holds:
            if self.held:
                log.warning("duty lease lost to another replica")
                await self._lose()
            return
        valid_until = began + self._lease.ttl - self._margin
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = loop.call_at(valid_until, self._expired)
        if not self.held:
            log.info("this replica took the background duties (lease epoch %d)", self._lease.epoch)
            await self._gain()

    def _expired(self) -> None:
        self._expiry = None
        if self.held:
            log.warning("duty lease could not be renewed in time: background duties stop here")
            asyncio.get_running_loop().create_task(self._lose())

    async def _gain(self) -> None:
        self.held = True
        self.gained_count += 1
        for hook in self._gained:
            try:
                await hook()
            except Exception:
                log.exception("taking over the duties: %s failed", getattr(hook, "__qualname__", hook))
        if self.held:
            for name in self._duties:
                self._launch(name)

    def _launch(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.create_task(self._duties[name](), name=f"duty-{name}")

    async def _lose(self) -> None:
        self.held = False
        await self._cancel_all()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        self._started = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        was_held = self.held
        self.held = False
        await self._cancel_all()
        if self._lease is not None and was_held:
            with contextlib.suppress(Exception):
                await self._lease.release()


async def every(interval: float, step: Callable[[], Awaitable[Any]], *, what: str) -> None:
    """A duty body: ``step()`` every ``interval`` seconds, a failure logged and the loop going on."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable:
            # Logged once by the database's health; the step runs again when it is back.
            pass
        except Exception:
            log.exception("background duty %s failed", what)
        await asyncio.sleep(interval)
