"""The shared resources of one running dashboard, created and closed by the lifespan.

Handlers reach them as ``request.app.state.services``; domain code receives the
pieces it needs as arguments. Nothing here is a module-level global.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.alerts import Alerts
from app.audit import AuditLog
from app.auth.login import LoginService
from app.broker.desktops import Broker
from app.db import AppDatabase
from app.directory import DirectoryLogin
from app.hyper.registry import HypervisorRegistry
from app.hyper.sshkeys import DashboardKey, KnownHostsFile
from app.live.hub import LiveHub
from app.metrics.exporter import Exporter
from app.proxy.gateway import ConnectGateway
from app.proxy.service import ConsoleService
from app.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from app.vms.operations import OperationsRunner
    from app.vms.service import VmService


@dataclass
class Services:
    settings: Settings
    db: AppDatabase
    hub: LiveHub
    audit: AuditLog
    # Every log-in (admin form, portal, broker API) and the change-password check.
    logins: LoginService
    # The dashboard's SSH identity and the known_hosts file of pinned hypervisor host keys.
    ssh_key: DashboardKey
    known_hosts: KnownHostsFile
    hypervisors: HypervisorRegistry
    consoles: ConsoleService
    # The CONNECT gateway for native SPICE clients; None when gateway.enabled is off.
    gateway: ConnectGateway | None
    directory: DirectoryLogin
    broker: Broker
    # Prometheus metrics: the event counters (exporter.metrics) and the /metrics exposition.
    metrics: Exporter
    # Alerts by e-mail and webhook (rules, rate limit, delivery).
    alerts: Alerts
    # Long operations (copy disk, populate ...) and the VM workflows; None until started.
    operations: OperationsRunner | None = None
    vms: VmService | None = None
    # Each further component (hypervisor registry, operations, console tickets, broker ...)
    # gets a typed field here and is built, started and stopped in app.application.lifespan.


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services
