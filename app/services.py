"""The shared resources of one running dashboard, created and closed by the lifespan.

Handlers reach them as ``request.app.state.services``; domain code receives the
pieces it needs as arguments. Nothing here is a module-level global.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from databases import Database

from app.audit import AuditLog
from app.auth.throttle import LoginThrottle
from app.broker.desktops import Broker
from app.directory import DirectoryLogin
from app.live.hub import LiveHub
from app.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection


@dataclass
class Services:
    settings: Settings
    db: Database
    hub: LiveHub
    audit: AuditLog
    login_throttle: LoginThrottle
    directory: DirectoryLogin
    broker: Broker
    # Each further component (hypervisor registry, operations, console tickets, broker ...)
    # gets a typed field here and is built, started and stopped in app.application.lifespan.


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services
