"""The shared resources of one running dashboard, created and closed by the lifespan.

Handlers reach them as ``request.app.state.services``; domain code receives the
pieces it needs as arguments. Nothing here is a module-level global, and every
field is built complete (started where it runs) before the dashboard serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from app.alerts import Alerts
from app.audit import AuditLog
from app.auth.login import LoginService
from app.auth.session import SessionRules
from app.auth.sessions import SessionStore
from app.broker.desktops import Broker
from app.broker.schedule_runner import ScheduleRunner
from app.clock import Clock
from app.cluster.node import ClusterNode
from app.db import AppDatabase
from app.directory import DirectoryLogin
from app.hyper.registry import HypervisorRegistry
from app.hyper.sshkeys import DashboardKey, KnownHostsFile
from app.live.hub import LiveHub
from app.metrics.exporter import Exporter
from app.proxy.service import ConsoleService
from app.retention import RetentionPurger
from app.settings import Settings
from app.vms.service import VmService


@dataclass(frozen=True)
class Services:
    settings: Settings
    # What time it is for sessions, tickets, leases, throttling and schedules (tests move it).
    clock: Clock
    db: AppDatabase
    hub: LiveHub
    audit: AuditLog
    session_rules: SessionRules
    # Signed-in browsers (server-side sessions behind the session cookie).
    sessions: SessionStore
    # Every log-in (admin form, portal, broker API) and the change-password check.
    logins: LoginService
    # The dashboard's SSH identity and the known_hosts file of pinned hypervisor host keys.
    ssh_key: DashboardKey
    known_hosts: KnownHostsFile
    hypervisors: HypervisorRegistry
    # Console tickets, the browser console's sessions and the CONNECT gateway (``consoles.gateway``).
    consoles: ConsoleService
    # The VM workflows and their long operations (``vms.operations``).
    vms: VmService
    directory: DirectoryLogin
    broker: Broker
    # The pools' schedules (runs each start once; ``wake()`` to look at them now).
    schedules: ScheduleRunner
    # Deletes audit records past their retention and dead API tokens (``tick()`` is one pass).
    retention: RetentionPurger
    # Prometheus metrics: the event counters (exporter.metrics) and the /metrics exposition.
    metrics: Exporter
    # Alerts by e-mail and webhook (rules, rate limit, delivery).
    alerts: Alerts
    # This replica's part in the cluster (bus, heartbeat, duties, health), or its one-process stand-ins.
    cluster: ClusterNode
    # Each further component gets a typed field here and is built, started and stopped
    # in app.application.open_services.


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services
