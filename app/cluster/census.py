"""Console sessions of the other replicas: for connection limits, the Sessions page, the reaper.

Each replica keeps its own console sessions in memory (:mod:`app.proxy.sessions`). In a
cluster it also writes them to Redis at every heartbeat when they changed, under keys
that expire unless refreshed (a replica that died stops counting within seconds):

* ``kvmvdi:consoles:<replica>``: hash ticket id -> the session (user, VM, via, from, since);
* ``kvmvdi:conns:<replica>``: hash ``total`` and ``u:<user id>`` -> open connections.

At the same heartbeat it reads the other live replicas' counts, which connection limits
add to its own (so a limit may be passed by what the others opened within the last
heartbeat; never by more). The Sessions page and the lease reaper read the sessions of
every live replica when they need them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

log = logging.getLogger("kvmvdi.cluster.census")

SESSIONS_KEY = "kvmvdi:consoles:{replica}"
COUNTS_KEY = "kvmvdi:conns:{replica}"


@dataclass(frozen=True)
class OpenConsole:
    """One open console session somewhere in the cluster."""

    replica: str
    ticket_id: int
    user_id: int
    username: str
    vm_id: int
    vm_name: str
    via: str
    client_address: str
    started_at: str


class ConsoleRoster(Protocol):
    """What the other replicas have open (nothing, for one process)."""

    def connections_elsewhere(self) -> int: ...

    def user_connections_elsewhere(self, user_id: int) -> int: ...

    async def sessions_elsewhere(self) -> list[OpenConsole]: ...


class NoPeers:
    """One process: there is nobody else."""

    def connections_elsewhere(self) -> int:
        return 0

    def user_connections_elsewhere(self, user_id: int) -> int:
        return 0

    async def sessions_elsewhere(self) -> list[OpenConsole]:
        return []


class RedisRoster:
    def __init__(self, redis: aioredis.Redis, *, replica: str, ttl: float) -> None:
        self._redis = redis
        self.replica = replica
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._peers: list[str] = []
        self._total = 0
        self._per_user: dict[int, int] = {}
        self._published: object = None

    # -- what the others have ----------------------------------------------------------------

    def connections_elsewhere(self) -> int:
        return self._total

    def user_connections_elsewhere(self, user_id: int) -> int:
        return self._per_user.get(user_id, 0)

    async def sessions_elsewhere(self) -> list[OpenConsole]:
        found: list[OpenConsole] = []
        peers = list(self._peers)  # the heartbeat may replace the list meanwhile
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in peers:
                    pipe.hgetall(SESSIONS_KEY.format(replica=name))
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("console sessions of the other replicas unknown: %s", exc)
            return []
        for name, entries in zip(peers, results, strict=True):
            for raw in (entries or {}).values():
                try:
                    found.append(OpenConsole(**{**json.loads(raw), "replica": name}))
                except (TypeError, ValueError):
                    continue
        return found

    # -- heartbeat ----------------------------------------------------------------------------

    async def refresh(self, alive: Iterable[str]) -> None:
        """Read the live peers' connection counts (a dead replica's keys are not even asked for)."""
        peers = sorted(set(alive) - {self.replica})
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in peers:
                pipe.hgetall(COUNTS_KEY.format(replica=name))
            results = await pipe.execute()
        total = 0
        per_user: dict[int, int] = {}
        for counts in results:
            for field, value in (counts or {}).items():
                key = field.decode() if isinstance(field, bytes) else str(field)
                if key == "total":
                    total += int(value)
                elif key.startswith("u:"):
                    user_id = int(key[2:])
                    per_user[user_id] = per_user.get(user_id, 0) + int(value)
        self._peers, self._total, self._per_user = peers, total, per_user

    async def publish(self, sessions: list[OpenConsole], total: int, per_user: dict[int, int]) -> None:
        """Write this replica's sessions and counts when they changed; keep the keys alive."""
        sessions_key = SESSIONS_KEY.format(replica=self.replica)
        counts_key = COUNTS_KEY.format(replica=self.replica)
        state = (tuple(sorted(s.ticket_id for s in sessions)), total, tuple(sorted(per_user.items())))
        async with self._redis.pipeline(transaction=True) as pipe:
            if state != self._published:
                pipe.delete(sessions_key, counts_key)
                if sessions:
                    pipe.hset(sessions_key, mapping={str(s.ticket_id): _dump(s) for s in sessions})
                counts: dict[FieldT, EncodableT] = {"total": total}
                counts.update({f"u:{user}": n for user, n in per_user.items() if n})
                pipe.hset(counts_key, mapping=counts)
            pipe.pexpire(sessions_key, self._ttl_ms)
            pipe.pexpire(counts_key, self._ttl_ms)
            await pipe.execute()
        self._published = state

    def forget_published(self) -> None:
        """Redis lost its keys (a restart): write everything again at the next heartbeat."""
        self._published = None

    async def withdraw(self) -> None:
        """A clean stop: this replica's sessions are gone at once."""
        await self._redis.delete(
            SESSIONS_KEY.format(replica=self.replica), COUNTS_KEY.format(replica=self.replica)
        )


def _dump(session: OpenConsole) -> str:
    data: dict[str, Any] = asdict(session)
    data.pop("replica")
    return json.dumps(data)
