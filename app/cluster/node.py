"""This replica's part in the cluster, or the lone process's stand-ins for it.

:class:`ClusterNode` is built by the lifespan from ``[cluster]``. With a Redis URL it
has a Redis bus and console roster, a heartbeat row and the duty lease in the
database; without, a bus that tells nobody, no peers, and duties held from the start.

Its heartbeat (every ``cluster.heartbeat_interval``) writes this replica's row and
reads everyone's, publishes this replica's console sessions and reads the others'
counts, closes consoles whose ticket was revoked meanwhile (in case a revocation
message was lost), and takes or renews the duty lease.

:meth:`ClusterNode.drain` is the graceful stop: readiness goes down, requests are still
served for ``drain_grace`` seconds (the load balancer notices), then consoles and live
pages are told to reconnect, which takes them to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from databases import Database

from app import db as database
from app.auth.throttle_store import MemoryThrottleStore, ThrottleStore
from app.clock import Clock
from app.cluster.alert_relay import RedisAlertRelay
from app.cluster.bus import Bus, LocalBus, RedisBus
from app.cluster.census import ConsoleRoster, NoPeers, OpenConsole, RedisRoster
from app.cluster.duties import Duties, DutyLease, every
from app.cluster.health import Health
from app.cluster.replicas import LocalCounts, Replicas
from app.cluster.throttle import RedisThrottleStore
from app.i18n import gettext as _
from app.settings import Settings
from app.vms.thumbnails import RedisThumbnails, ThumbnailStore

log = logging.getLogger("kvmvdi.cluster")


class LocalConsoles(Protocol):
    """What the heartbeat and the drain need of this replica's consoles (the console service)."""

    def local_consoles(self) -> list[OpenConsole]: ...

    def connection_counts(self) -> tuple[int, dict[int, int]]: ...

    async def close_revoked(self) -> int: ...

    def close_all_for_restart(self) -> int: ...


class LocalLive(Protocol):
    """What the drain needs of this replica's live hub."""

    def resync(self) -> None: ...


class _NoConsoles:
    def local_consoles(self) -> list[OpenConsole]:
        return []

    def connection_counts(self) -> tuple[int, dict[int, int]]:
        return 0, {}

    async def close_revoked(self) -> int:
        return 0

    def close_all_for_restart(self) -> int:
        return 0


class ClusterConfigError(ValueError):
    """A configuration several replicas cannot share; the message says what to set."""


def replica_name(settings: Settings) -> str:
    return settings.cluster.replica or f"{socket.gethostname()}:{settings.server.port}"


def app_version() -> str:
    try:
        return version("kvm-vdi")
    except PackageNotFoundError:
        return ""


def check_cluster_settings(settings: Settings) -> None:
    """Refuse, with what to change, a cluster set-up whose replicas could not work together."""
    if settings.cluster.role == "console" and not settings.cluster.enabled:
        raise ClusterConfigError(
            _("a console-only replica (role console) is part of a cluster: set cluster.redis_url")
        )
    if not settings.cluster.enabled:
        return
    if database.backend_name(settings.database_url.get_secret_value()) != "mysql":
        raise ClusterConfigError(
            _(
                "cluster.redis_url is set, but database_url is SQLite: replicas must share a MariaDB "
                "(Galera) database"
            )
        )
    if settings.security.session_secret is None:
        raise ClusterConfigError(
            _(
                "cluster.redis_url is set, but security.session_secret is not: every replica must sign "
                "session cookies with the same secret (set it in the configuration of all of them)"
            )
        )


class ClusterNode:
    def __init__(
        self, *, settings: Settings, db: Database, ssh_key_fingerprint: str = "", ca_fingerprint: str = ""
    ) -> None:
        check_cluster_settings(settings)
        cluster = settings.cluster
        self.settings = cluster
        self.name = replica_name(settings)
        self.clustered = cluster.enabled
        self._db = db
        self._redis_bus: RedisBus | None = None
        self._roster: RedisRoster | None = None
        self.replicas: Replicas | None = None
        lease: DutyLease | None = None
        if cluster.enabled and cluster.redis_url is not None:
            self._redis_bus = RedisBus(cluster.redis_url.get_secret_value(), origin=self.name)
            # Twice the replica timeout: a replica a heartbeat late still counts.
            self._roster = RedisRoster(
                self._redis_bus.redis, replica=self.name, ttl=2 * cluster.replica_timeout
            )
            self._redis_bus.on_resync(self._roster.forget_published)
            self.replicas = Replicas(
                db=db,
                name=self.name,
                role=cluster.role,
                address=f"{settings.server.host}:{settings.server.port}",
                version=app_version(),
                ssh_key_fingerprint=ssh_key_fingerprint,
                ca_fingerprint=ca_fingerprint,
                timeout=cluster.replica_timeout,
                counts=self._local_counts,
            )
            if cluster.role == "all":
                lease = DutyLease(db, holder=self.name, ttl=cluster.replica_timeout)
        self.bus: Bus = self._redis_bus or LocalBus()
        self.roster: ConsoleRoster = self._roster or NoPeers()
        # A console-only replica never takes the background duties.
        self.duties = Duties(
            lease=lease, margin=cluster.heartbeat_interval, passive=cluster.role == "console"
        )
        self.health = Health(
            db=db,
            bus=self.bus,
            clustered=self.clustered,
            head=database.head_revision(),
            known=frozenset(database.known_revisions()),
        )
        self._counts: Callable[[], LocalCounts] = LocalCounts
        self._consoles: LocalConsoles = _NoConsoles()
        self._live: LocalLive | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.beats = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Join the bus before anything else starts (nothing said from now on is missed)."""
        if self._redis_bus is not None:
            await self._redis_bus.start()
        if self.replicas is not None:
            await self.replicas.register()

    async def start(
        self, *, counts: Callable[[], LocalCounts], consoles: LocalConsoles, live: LocalLive
    ) -> None:
        """Start the heartbeat and the duties (once everything they use is running)."""
        self._counts = counts
        self._consoles = consoles
        self._live = live
        if self.replicas is not None:
            replicas = self.replicas
            self.duties.add(
                "forget-replicas", lambda: every(3600.0, replicas.forget_old, what="forgetting old replicas")
            )
            await self._beat()
            self._heartbeat = asyncio.create_task(self._beat_forever(), name="cluster-heartbeat")
        await self.duties.start()

    async def stop(self) -> None:
        """Duties first (the lease goes to another replica), then the heartbeat, then the bus."""
        await self.duties.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._roster is not None:
            with contextlib.suppress(Exception):
                await self._roster.withdraw()
        if self.replicas is not None:
            with contextlib.suppress(Exception):
                await self.replicas.leave()
        if self._redis_bus is not None:
            await self._redis_bus.stop()

    def _local_counts(self) -> LocalCounts:
        return self._counts()

    def throttle_store(self, clock: Clock) -> ThrottleStore:
        """Where log-in attempts are counted: Redis for a cluster (every replica sees them, by Redis's
        clock), else memory (by the dashboard's clock)."""
        if self._redis_bus is not None:
            return RedisThrottleStore(self._redis_bus.redis)
        return MemoryThrottleStore(clock=clock.monotonic)

    def alert_relay(self) -> RedisAlertRelay | None:
        """Where alerts go to be delivered once for the cluster (by the duty holder); none alone."""
        return RedisAlertRelay(self._redis_bus.redis) if self._redis_bus is not None else None

    def thumbnail_store(self) -> ThumbnailStore | None:
        """Where VM thumbnails live: Redis for a cluster (every replica serves them), else memory."""
        return RedisThumbnails(self._redis_bus.redis) if self._redis_bus is not None else None

    # -- heartbeat ----------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        interval = self.settings.heartbeat_interval
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await self._beat()
            await asyncio.sleep(max(0.05, interval - (loop.time() - began)))

    async def _beat(self) -> None:
        self.beats += 1
        alive: set[str] = {self.name}
        if self.replicas is not None:
            try:
                await self.replicas.beat()
                alive = self.replicas.alive_names()
            except Exception as exc:
                log.warning("heartbeat not written: %s", exc)
        if self._roster is not None:
            try:
                total, per_user = self._consoles.connection_counts()
                await self._roster.publish(self._consoles.local_consoles(), total, per_user)
                await self._roster.refresh(alive)
            except Exception as exc:
                log.warning("console sessions not exchanged with the other replicas: %s", exc)
        try:
            await self._consoles.close_revoked()
        except Exception as exc:
            log.warning("revoked console tickets not checked: %s", exc)
        await self.duties.tick()

    # -- draining -----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Graceful stop: not ready, still serving for ``drain_grace``, then consoles and live pages
        reconnect (elsewhere). The caller stops the server afterwards."""
        log.warning("draining: readiness down, consoles move in %.1f s", self.settings.drain_grace)
        self.health.draining = True
        if self.replicas is not None:
            self.replicas.draining = True
        await asyncio.sleep(self.settings.drain_grace)
        closed = self._consoles.close_all_for_restart()
        if self._live is not None:
            self._live.resync()
        log.warning("draining: %d console session(s) told to reconnect", closed)
