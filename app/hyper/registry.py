"""The registry: one :class:`Hypervisor` per configured record, kept connected by a monitor.

It is the single place that records hypervisor state: the ``hypervisors`` row
(state, reason, when, host facts), the audit log (``hypervisor_up`` /
``hypervisor_down``), the ``hypervisor`` live topic, and the connection
listeners. Domain events from every hypervisor go to the domain listeners.

With several replicas every replica connects to every hypervisor and keeps its own
view (consoles and hand-outs use it), but only the holder of the background duties
records state (row, audit, live topic): fencing is decided once. When a replica takes
the duties over, it records its view of every hypervisor (:meth:`take_over`). A
record changed by an admin on one replica is reloaded by all (cluster bus).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.audit import AuditLog
from app.clock import utcnow
from app.cluster.bus import Bus, LocalBus
from app.cluster.duties import Duties
from app.db.records import Record, fetch_records
from app.db.schema import hypervisors as hypervisors_table
from app.hyper.errors import HypervisorNotFound, HypervisorUnavailable
from app.hyper.eventloop import ensure_libvirt_event_loop
from app.hyper.events import ConnectionEvent, DomainEvent, Listener, Listeners
from app.hyper.hypervisor import Hypervisor
from app.hyper.monitor import HypervisorMonitor
from app.hyper.records import HypervisorRecord
from app.hyper.spice_tls import SpiceTls
from app.hyper.sshkeys import DashboardKey, KnownHostsFile
from app.i18n.messages import M_, Message
from app.i18n.messages import stored as stored_message
from app.live.hub import LiveHub
from app.settings import Settings

log = logging.getLogger("kvmvdi.hyper.registry")

# Cluster bus channel: a hypervisor record changed (added, edited, removed, host key pinned).
RELOAD_CHANNEL = "hypervisor-reload"


@dataclass(frozen=True)
class _StoredState(Record):
    id: int
    state: str


class HypervisorRegistry:
    def __init__(
        self,
        *,
        db: Database,
        hub: LiveHub,
        audit: AuditLog,
        settings: Settings,
        key: DashboardKey,
        known_hosts: KnownHostsFile,
        spice_tls: SpiceTls,
        duties: Duties | None = None,
        bus: Bus | None = None,
    ) -> None:
        self._db = db
        self._hub = hub
        self._audit = audit
        self._duties = duties
        self._bus = bus or LocalBus()
        self._bus.subscribe(RELOAD_CHANNEL, self._reloaded_elsewhere)
        self._settings = settings.hypervisors
        self.key = key
        self.known_hosts = known_hosts
        self.spice_tls = spice_tls
        self._hypervisors: dict[int, Hypervisor] = {}
        self._monitors: dict[int, HypervisorMonitor] = {}
        # The state last written to the database, to audit real transitions only.
        self._stored_state: dict[int, str] = {}
        # The connection (Hypervisor.connections) last announced as "up", per hypervisor.
        self._announced: dict[int, int] = {}
        self._domain_listeners: Listeners[DomainEvent] = Listeners("domain")
        self._connection_listeners: Listeners[ConnectionEvent] = Listeners("connection")
        self._lock = asyncio.Lock()
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to every configured hypervisor; waits (bounded) for the first attempts."""
        ensure_libvirt_event_loop()
        async with self._lock:
            records = await fetch_records(
                self._db, HypervisorRecord, hypervisors_table.select().order_by(hypervisors_table.c.id)
            )
            self._stored_state = {record.id: record.state for record in records}
            self._write_known_hosts(records)
            for record in records:
                self._add(record)
            self._started = True
        await self._wait_first_attempts(list(self._monitors.values()))

    async def stop(self) -> None:
        async with self._lock:
            self._started = False
            monitors = list(self._monitors.values())
            self._monitors.clear()
            await asyncio.gather(*(monitor.stop() for monitor in monitors))

    async def reload(self, hypervisor_id: int) -> Hypervisor | None:
        """Apply a changed, added or removed record (after add/edit/remove/confirm host key).

        Connection settings changes reconnect; maintenance, SPICE address and
        directory changes apply in place. Returns the hypervisor, or ``None`` if removed.
        The other replicas reload it too.
        """
        self._bus.publish(RELOAD_CHANNEL, {"id": hypervisor_id})
        return await self._reload(hypervisor_id)

    async def _reloaded_elsewhere(self, message: dict[str, Any]) -> None:
        hypervisor_id = message.get("id")
        if isinstance(hypervisor_id, int) and self._started:
            await self._reload(hypervisor_id)

    @property
    def recording(self) -> bool:
        """Whether this replica records hypervisor state (it holds the background duties)."""
        return self._duties is None or self._duties.held

    async def take_over(self) -> None:
        """This replica now holds the duties: record its view of every hypervisor."""
        rows = await fetch_records(
            self._db, _StoredState, sa.select(hypervisors_table.c.id, hypervisors_table.c.state)
        )
        self._stored_state = {row.id: row.state for row in rows}
        for hv in self.all():
            if hv.state_changed_at is None:
                continue  # not reported yet: its monitor records it when it does
            await self._record(hv, hv.state, hv.reason, hv.reason_i18n, audit=True)
            self._publish(hv)

    async def _reload(self, hypervisor_id: int) -> Hypervisor | None:
        async with self._lock:
            found = await fetch_records(self._db, HypervisorRecord, hypervisors_table.select())
            records = {record.id: record for record in found}
            self._write_known_hosts(list(records.values()))
            record = records.get(hypervisor_id)
            current = self._hypervisors.get(hypervisor_id)
            if record is None:
                if current is not None:
                    await self._remove(current)
                return None
            if current is None:
                self._stored_state[hypervisor_id] = record.state
                hv = self._add(record)
                monitor = self._monitors.get(hypervisor_id)
            elif record.connection_identity() != current.record.connection_identity():
                await self._monitors.pop(hypervisor_id).stop()
                current.record = record
                await self._report_state(current, "unknown", "reconnecting with new settings", "")
                hv = current
                monitor = self._start_monitor(hv)
            else:
                maintenance_changed = record.maintenance != current.record.maintenance
                if SpiceTls.identity(record) != SpiceTls.identity(current.record):
                    # A new console address: the monitor issues a certificate naming it.
                    current.spice_certificate = None
                current.record = record
                hv, monitor = current, None
                if maintenance_changed:
                    if self.recording:
                        self._publish(hv)
                    await self._connection_listeners.emit(self._connection_event(hv))
        if monitor is not None:
            await self._wait_first_attempts([monitor])
        return hv

    # -- lookup ---------------------------------------------------------------------------

    def get(self, hypervisor_id: int, *, for_new_work: bool = False) -> Hypervisor:
        """The connected hypervisor; raises :class:`HypervisorUnavailable` when down, unknown or reconnecting.

        With ``for_new_work`` a hypervisor in maintenance is refused too (nothing new
        is placed or started there, existing desktops can still be managed).
        """
        hv = self._hypervisors.get(hypervisor_id)
        if hv is None:
            raise HypervisorNotFound(f"no hypervisor with id {hypervisor_id}")
        if hv.state != "up" or not hv.connected:
            raise HypervisorUnavailable(f"hypervisor {hv.name} is {hv.state}: {hv.reason or 'reconnecting'}")
        if for_new_work and hv.maintenance:
            raise HypervisorUnavailable(f"hypervisor {hv.name} is in maintenance")
        return hv

    def find(self, hypervisor_id: int) -> Hypervisor | None:
        """The hypervisor whatever its state (for status pages), or ``None``."""
        return self._hypervisors.get(hypervisor_id)

    def all(self) -> list[Hypervisor]:
        return sorted(self._hypervisors.values(), key=lambda hv: hv.name)

    def accepting_work(self) -> list[Hypervisor]:
        """Hypervisors that are up, connected and not in maintenance."""
        return [hv for hv in self.all() if hv.accepting_work]

    async def wait_for_state(
        self,
        hypervisor_id: int,
        state: str,
        timeout: float,  # noqa: ASYNC109 -- part of the API
    ) -> Hypervisor:
        """Wait until the hypervisor reaches ``state`` (and, for "up", is connected)."""
        async with asyncio.timeout(timeout):
            while True:
                hv = self._hypervisors.get(hypervisor_id)
                if hv is not None and hv.state == state and (state != "up" or hv.connected):
                    return hv
                await asyncio.sleep(0.05)

    # -- listeners ------------------------------------------------------------------------

    def add_domain_listener(
        self, callback: Listener[DomainEvent], *, first: bool = False
    ) -> Callable[[], None]:
        """``callback(DomainEvent)`` (plain or async) for every lifecycle change; returns an unsubscriber.

        ``first`` puts it before the listeners already registered (e.g. to time what they do).
        """
        return self._domain_listeners.add(callback, first=first)

    def add_connection_listener(self, callback: Listener[ConnectionEvent]) -> Callable[[], None]:
        """``callback(ConnectionEvent)`` on up/down/unknown transitions, maintenance changes and removal."""
        return self._connection_listeners.add(callback)

    # -- internals ------------------------------------------------------------------------

    def _add(self, record: HypervisorRecord) -> Hypervisor:
        hv = Hypervisor(record, self._settings)
        stored = self._stored_state.get(record.id, "unknown")
        hv.reason, hv.reason_i18n = stored_message(
            M_("connecting") if stored != "down" else M_("reconnecting")
        )
        self._hypervisors[record.id] = hv
        self._start_monitor(hv)
        return hv

    def _start_monitor(self, hv: Hypervisor) -> HypervisorMonitor:
        monitor = HypervisorMonitor(
            hv,
            key=self.key,
            known_hosts=self.known_hosts,
            spice_tls=self.spice_tls,
            settings=self._settings,
            report_state=self._report_state,
            report_facts=self._report_facts,
            deliver=self._domain_listeners.emit,
        )
        self._monitors[hv.id] = monitor
        monitor.start()
        return monitor

    async def _remove(self, hv: Hypervisor) -> None:
        monitor = self._monitors.pop(hv.id, None)
        if monitor is not None:
            await monitor.stop()
        self._hypervisors.pop(hv.id, None)
        self._stored_state.pop(hv.id, None)
        self._announced.pop(hv.id, None)
        if self.recording:
            self._hub.publish("hypervisor", {"id": hv.id, "name": hv.name, "state": "removed", "reason": ""})
        await self._connection_listeners.emit(ConnectionEvent(hv.id, hv.name, "removed", ""))

    async def _wait_first_attempts(self, monitors: list[HypervisorMonitor]) -> None:
        if not monitors:
            return
        waiters = [asyncio.ensure_future(monitor.first_attempt.wait()) for monitor in monitors]
        _done, pending = await asyncio.wait(waiters, timeout=self._settings.startup_wait)
        for waiter in pending:
            waiter.cancel()

    def _write_known_hosts(self, records: list[HypervisorRecord]) -> None:
        entries = [entry for record in records if (entry := record.known_hosts_entry())]
        self.known_hosts.write(entries)

    async def _report_state(self, hv: Hypervisor, state: str, note: str | Message, code: str) -> None:
        reason, kept = stored_message(note)
        # A reconnection within fence_after keeps "up" but is announced all the same:
        # listeners re-read what changed while the connection was away.
        reconnected = state == "up" and self._announced.get(hv.id) != hv.connections
        if hv.state == state and hv.reason == reason and hv.state_changed_at is not None and not reconnected:
            return
        if state == "up":
            self._announced[hv.id] = hv.connections
        now = utcnow()
        changed = hv.state != state or hv.state_changed_at is None
        if self.recording:
            # Record first: whoever sees the new state in memory finds it in the database and audit log.
            await self._record(hv, state, reason, kept, audit=True)
        hv.state, hv.reason, hv.reason_i18n, hv.reason_code = state, reason, kept, code
        if changed:
            hv.state_changed_at = now
        if self.recording:
            self._publish(hv)
        await self._connection_listeners.emit(self._connection_event(hv))

    async def _record(self, hv: Hypervisor, state: str, reason: str, kept: str, *, audit: bool) -> None:
        """The hypervisor's row (and audit record of a real transition) for ``state``."""
        now = utcnow()
        values: dict[str, Any] = {
            "state": state,
            "state_reason": reason,
            "state_reason_i18n": kept,
            "last_check_at": now,
        }
        stored = self._stored_state.get(hv.id)
        if stored != state:
            values["state_changed_at"] = now
        if state == "up":
            values.update(self._facts_values(hv))
        await self._update_row(hv, values)
        if stored != state:
            self._stored_state[hv.id] = state
            if audit and state in ("up", "down"):
                level = logging.WARNING if state == "down" else logging.INFO
                log.log(level, "hypervisor %s is %s%s", hv.name, state, f": {reason}" if reason else "")
                await self._audit.record(f"hypervisor_{state}", actor="system", target=hv.name, reason=reason)

    async def _report_facts(self, hv: Hypervisor) -> None:
        if not self.recording:
            return
        await self._update_row(hv, {"last_check_at": utcnow(), **self._facts_values(hv)})
        self._publish(hv)

    @staticmethod
    def _facts_values(hv: Hypervisor) -> dict[str, Any]:
        values: dict[str, Any] = {"images_free_bytes": hv.images_free_bytes}
        if hv.facts is not None:
            values.update(
                libvirt_version=hv.facts.libvirt_version, cpus=hv.facts.cpus, memory_mib=hv.facts.memory_mib
            )
        return values

    async def _update_row(self, hv: Hypervisor, values: dict[str, Any]) -> None:
        try:
            await self._db.execute(
                sa.update(hypervisors_table).where(hypervisors_table.c.id == hv.id).values(**values)
            )
        except Exception:
            # The live state stays right even if the database is briefly unavailable.
            log.exception("could not store the state of hypervisor %s", hv.name)

    def _publish(self, hv: Hypervisor) -> None:
        self._hub.publish("hypervisor", hv.status())

    @staticmethod
    def _connection_event(hv: Hypervisor) -> ConnectionEvent:
        return ConnectionEvent(hv.id, hv.name, hv.state, hv.reason, hv.maintenance)
