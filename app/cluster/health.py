"""Liveness and readiness, for the load balancer and for systemd.

``/healthz``: the process answers (its event loop runs). ``/readyz``: it should get
traffic: the database answers and its schema is this code's (or newer: another replica
already upgraded it), Redis answers (cluster), and the replica is not draining.

A shared service that stalls for a moment stalls every replica alike: when a Galera node
dies, the others hold every write until they evict it (``evs.suspect_timeout``, 5 s by
default). Marking every replica unready then would turn slow answers into none at all, so
the database and Redis count as failed only once they have not answered for
:data:`OUTAGE_GRACE` seconds. Each check waits briefly (the load balancer's check has a
timeout of its own), and answers are cached for a moment.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from databases import Database

from app.cluster.bus import Bus
from app.db.retry import retrying

CACHE_SECONDS = 0.5
CHECK_TIMEOUT = 0.5
OUTAGE_GRACE = 10.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)


class Health:
    def __init__(
        self, *, db: Database, bus: Bus, clustered: bool, head: str | None, known: frozenset[str]
    ) -> None:
        self._db = db
        self._bus = bus
        self.clustered = clustered
        # The schema revision of this code, and every revision its migrations know.
        self._head = head
        self._known = known
        self.draining = False
        self._cached: tuple[float, Readiness] | None = None
        self._silent_since: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def readiness(self) -> Readiness:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < CACHE_SECONDS and not self.draining:
                return self._cached[1]
            result = await self._check()
            self._cached = (time.monotonic(), result)
            return result

    async def _check(self) -> Readiness:
        checks = {"database": await self._database()}
        if self.clustered:
            answered = await self._bus.ping()
            checks["redis"] = self._tolerated("redis", "ok" if answered else "unreachable")
        checks["draining"] = "yes" if self.draining else "no"
        ready = not self.draining and all(
            value.startswith("ok") for key, value in checks.items() if key != "draining"
        )
        return Readiness(ready, checks)

    async def _database(self) -> str:
        try:
            # A pooled connection to a node that just died fails once: retrying() takes a fresh one.
            revision = await asyncio.wait_for(
                retrying(
                    lambda: self._db.fetch_val(sa.text("SELECT version_num FROM alembic_version")),
                    what="readiness",
                    attempts=3,
                ),
                CHECK_TIMEOUT,
            )
        except Exception as exc:  # any failure is the answer
            return self._tolerated("database", f"unreachable: {type(exc).__name__}")
        self._silent_since.pop("database", None)
        if revision != self._head and revision in self._known:
            return f"schema at {revision}, this version needs {self._head}"
        return "ok"  # at our revision, or newer: another replica was upgraded first

    def _tolerated(self, service: str, outcome: str) -> str:
        """``outcome``, or "ok" while the service has been silent for less than the grace."""
        if outcome == "ok":
            self._silent_since.pop(service, None)
            return outcome
        since = self._silent_since.setdefault(service, time.monotonic())
        silent = time.monotonic() - since
        if silent < OUTAGE_GRACE:
            return f"ok (no answer for {silent:.1f} s)"
        return f"{outcome} for {silent:.0f} s"
