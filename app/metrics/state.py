"""Gauges read when Prometheus scrapes: always right, and cheaper than keeping them up to date.

:func:`read_state` gathers what the database knows (desktops per pool by state,
active leases, running operations) with three grouped queries, and what this
process holds in memory (hypervisor states, open console sessions and their
bytes so far, live subscribers). :class:`StateCollector` turns one such
snapshot into metric families for the exposition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from databases import Database
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.broker.pools import desktop_states
from app.db.records import fetch_tallies
from app.db.schema import leases, operations, pools
from app.hyper import HypervisorRegistry
from app.live.hub import LiveHub
from app.metrics.events import Metrics
from app.proxy.sessions import ConsoleSessions

DESKTOP_STATES = ("free", "in_use", "booting", "unavailable")
HYPERVISOR_STATES = ("up", "down", "unknown")


@dataclass
class State:
    desktops: dict[str, dict[str, int]] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)
    operations_running: dict[str, int] = field(default_factory=dict)
    hypervisors: dict[str, str] = field(default_factory=dict)
    console_sessions: dict[str, int] = field(default_factory=dict)
    console_connections: int = 0
    console_bytes: dict[str, int] = field(default_factory=dict)
    subscribers: dict[str, int] = field(default_factory=dict)


async def read_state(
    *,
    db: Database,
    hypervisors: HypervisorRegistry,
    sessions: ConsoleSessions,
    hub: LiveHub,
    metrics: Metrics,
) -> State:
    state = State()
    state.desktops = await desktop_states(db)
    state.leases = await fetch_tallies(
        db,
        sa.select(pools.c.name.label("key"), sa.func.count(leases.c.id).label("n"))
        .select_from(pools.outerjoin(leases, (leases.c.pool_id == pools.c.id) & leases.c.ended_at.is_(None)))
        .group_by(pools.c.name),
    )
    # Every kind ever run gets a series (0 when none runs), so that queries and panels always find it.
    active = sa.case((operations.c.state.in_(("pending", "running")), 1), else_=0)
    state.operations_running = await fetch_tallies(
        db,
        sa.select(operations.c.kind.label("key"), sa.func.sum(active).label("n")).group_by(operations.c.kind),
    )
    # In memory, read in one go on the event loop: nothing changes between these lines.
    state.hypervisors = {hv.name: hv.state for hv in hypervisors.all()}
    bytes_now = dict(metrics.ended_bytes)
    for session in sessions.sessions():
        state.console_sessions[session.via] = state.console_sessions.get(session.via, 0) + 1
        bytes_now["to_client"] += session.bytes_to_client
        bytes_now["to_vm"] += session.bytes_to_vm
    state.console_bytes = bytes_now
    state.console_connections = sessions.connection_count
    admins = hub.admin_subscriber_count
    state.subscribers = {"admin": admins, "client": hub.subscriber_count - admins}
    return state


class StateCollector:
    """Metric families of one :class:`State` snapshot."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.state
        desktops = GaugeMetricFamily(
            "kvmvdi_pool_desktops",
            "Desktops per pool: free (can be handed out now), in_use, booting (assigned, not running yet),"
            " unavailable (maintenance, locked, busy, hypervisor down)",
            labels=["pool", "state"],
        )
        for pool, counts in sorted(s.desktops.items()):
            for name in DESKTOP_STATES:
                desktops.add_metric([pool, name], counts.get(name, 0))
        yield desktops
        active = GaugeMetricFamily("kvmvdi_pool_leases", "Active leases per pool", labels=["pool"])
        for pool, count in sorted(s.leases.items()):
            active.add_metric([pool], count)
        yield active
        running = GaugeMetricFamily(
            "kvmvdi_operations_running", "Long operations pending or running, by kind", labels=["kind"]
        )
        for kind, count in sorted(s.operations_running.items()):
            running.add_metric([kind], count)
        yield running
        per_state = GaugeMetricFamily("kvmvdi_hypervisors", "Hypervisors by state", labels=["state"])
        for name in HYPERVISOR_STATES:
            per_state.add_metric([name], sum(1 for st in s.hypervisors.values() if st == name))
        yield per_state
        up = GaugeMetricFamily(
            "kvmvdi_hypervisor_up", "1 when the hypervisor is up, else 0", labels=["hypervisor"]
        )
        for name, st in sorted(s.hypervisors.items()):
            up.add_metric([name], 1 if st == "up" else 0)
        yield up
        sessions = GaugeMetricFamily(
            "kvmvdi_console_sessions", "Open console sessions by gateway (websocket, gateway)", labels=["via"]
        )
        for via in sorted({"websocket", "gateway", *s.console_sessions}):
            sessions.add_metric([via], s.console_sessions.get(via, 0))
        yield sessions
        yield GaugeMetricFamily(
            "kvmvdi_console_connections",
            "Open proxied console connections (SPICE channels)",
            value=s.console_connections,
        )
        moved = CounterMetricFamily(
            "kvmvdi_console_bytes", "Console bytes moved by the proxy, by direction", labels=["direction"]
        )
        for direction in ("to_client", "to_vm"):
            moved.add_metric([direction], s.console_bytes.get(direction, 0))
        yield moved
        live = GaugeMetricFamily(
            "kvmvdi_live_subscribers", "Browsers connected to /live, admin or client", labels=["kind"]
        )
        for kind in ("admin", "client"):
            live.add_metric([kind], s.subscribers.get(kind, 0))
        yield live


class Exposition:
    """The event registry and one state snapshot, as one collector for ``generate_latest``."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()
