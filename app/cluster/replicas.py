"""Which replicas are alive: a heartbeat row per replica, written with the database's clock.

Every ``heartbeat_interval`` a replica writes its row (``seen_ms`` = the database's now,
draining flag, live and console counts) and reads all rows. A replica whose row is older
than ``replica_timeout`` is gone: the duty holder interrupts its operations and its console
state in Redis is ignored. Rows of replicas gone for a day are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.cluster.dbclock import ms, now_ms
from app.db.records import Record, fetch_records
from app.db.schema import cluster_replicas

log = logging.getLogger("kvmvdi.cluster")

FORGET_AFTER_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class ReplicaRecord(Record):
    __table__ = cluster_replicas

    name: str
    role: str
    address: str
    version: str
    ssh_key_fingerprint: str
    ca_fingerprint: str
    started_at: datetime
    seen_ms: int
    draining: bool
    live_admins: int
    live_clients: int
    console_connections: int


@dataclass(frozen=True)
class _SeenReplica(ReplicaRecord):
    # Milliseconds since its last heartbeat, by the database's clock.
    ago_ms: int


@dataclass(frozen=True)
class ReplicaInfo:
    name: str
    role: str
    address: str
    version: str
    ssh_key_fingerprint: str
    ca_fingerprint: str
    alive: bool
    draining: bool
    seen_ago: float  # seconds, by the database's clock
    live_admins: int
    live_clients: int
    console_connections: int

    @classmethod
    def from_record(cls, row: _SeenReplica, timeout_ms: int) -> ReplicaInfo:
        return cls(
            name=row.name,
            role=row.role,
            address=row.address,
            version=row.version,
            ssh_key_fingerprint=row.ssh_key_fingerprint,
            ca_fingerprint=row.ca_fingerprint,
            alive=row.ago_ms <= timeout_ms,
            draining=row.draining,
            seen_ago=row.ago_ms / 1000,
            live_admins=row.live_admins,
            live_clients=row.live_clients,
            console_connections=row.console_connections,
        )


@dataclass(frozen=True)
class LocalCounts:
    """What a replica reports about itself at each heartbeat."""

    live_admins: int = 0
    live_clients: int = 0
    console_connections: int = 0


async def read_replicas(db: Database, *, dead_after: float) -> list[ReplicaInfo]:
    """Every replica row with its age by the database's clock (``kvm-vdi check`` uses this too)."""
    now = now_ms(db.url.dialect)
    rows = await fetch_records(
        db,
        _SeenReplica,
        sa.select(cluster_replicas, (now - cluster_replicas.c.seen_ms).label("ago_ms")).order_by(
            cluster_replicas.c.name
        ),
    )
    return [ReplicaInfo.from_record(row, ms(dead_after)) for row in rows]


class Replicas:
    def __init__(
        self,
        *,
        db: Database,
        name: str,
        role: str,
        address: str,
        version: str,
        ssh_key_fingerprint: str,
        ca_fingerprint: str,
        timeout: float,
        counts: Callable[[], LocalCounts],
    ) -> None:
        self._db = db
        self.name = name
        self.role = role
        self._address = address
        self._version = version
        self._fingerprint = ssh_key_fingerprint
        self._ca_fingerprint = ca_fingerprint
        self.timeout = timeout
        self._counts = counts
        self.draining = False
        self.known: list[ReplicaInfo] = []
        self._registered = False

    @property
    def alive(self) -> list[ReplicaInfo]:
        """Replicas alive at the last heartbeat (this one included once it has beaten)."""
        return [replica for replica in self.known if replica.alive]

    def alive_names(self) -> set[str]:
        return {replica.name for replica in self.alive} | {self.name}

    def admin_watchers(self) -> int:
        """Admin browsers on /live across the cluster (thumbnails are taken while there are any)."""
        others = sum(r.live_admins for r in self.alive if r.name != self.name)
        return others + self._counts().live_admins

    async def register(self) -> None:
        """Write this replica's row (a restarted replica with the same name takes its row over)."""
        dialect = self._db.url.dialect
        values = self._row_values()
        updated = await self._db.fetch_val(
            sa.select(sa.func.count())
            .select_from(cluster_replicas)
            .where(cluster_replicas.c.name == self.name)
        )
        if updated:
            await self._db.execute(
                cluster_replicas.update()
                .where(cluster_replicas.c.name == self.name)
                .values(**values, started_at=utcnow(), seen_ms=now_ms(dialect))
            )
        else:
            await self._db.execute(
                cluster_replicas.insert().values(
                    name=self.name, **values, started_at=utcnow(), seen_ms=now_ms(dialect)
                )
            )
        self._registered = True

    async def beat(self) -> list[ReplicaInfo]:
        """One heartbeat: write this replica's row, read everyone's."""
        if not self._registered:
            await self.register()
        else:
            await self._db.execute(
                cluster_replicas.update()
                .where(cluster_replicas.c.name == self.name)
                .values(**self._row_values(), seen_ms=now_ms(self._db.url.dialect))
            )
        self.known = await read_replicas(self._db, dead_after=self.timeout)
        return self.known

    async def forget_old(self) -> int:
        """Delete rows of replicas gone for a day (duty holder, now and then)."""
        now = now_ms(self._db.url.dialect)
        gone = [r.name for r in self.known if r.seen_ago * 1000 > FORGET_AFTER_MS]
        if gone:
            await self._db.execute(
                cluster_replicas.delete().where(
                    cluster_replicas.c.name.in_(gone), now - cluster_replicas.c.seen_ms > FORGET_AFTER_MS
                )
            )
        return len(gone)

    async def leave(self) -> None:
        """A clean stop: mark the row as long gone, so nobody waits for its timeout."""
        if self._registered:
            await self._db.execute(
                cluster_replicas.update()
                .where(cluster_replicas.c.name == self.name)
                .values(seen_ms=0, draining=True, live_admins=0, live_clients=0, console_connections=0)
            )

    def _row_values(self) -> dict[str, Any]:
        counts = self._counts()
        return {
            "role": self.role,
            "address": self._address,
            "version": self._version,
            "ssh_key_fingerprint": self._fingerprint,
            "ca_fingerprint": self._ca_fingerprint,
            "draining": self.draining,
            "live_admins": counts.live_admins,
            "live_clients": counts.live_clients,
            "console_connections": counts.console_connections,
        }
