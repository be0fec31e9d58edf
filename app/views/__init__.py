"""HTTP and websocket handlers, one module per area; thin, domain logic lives elsewhere."""

from __future__ import annotations

from starlette.routing import BaseRoute, WebSocketRoute

import app.api.ids  # noqa: F401  (registers the ``id`` path convertor before any route is built)
from app.views import (
    alerts_api,
    api_broker,
    api_docs,
    audit,
    audit_api,
    auth,
    configuration,
    consoles,
    consoles_api,
    dhcp,
    health,
    home,
    hypervisors,
    hypervisors_api,
    images,
    images_api,
    language,
    live,
    metrics,
    people_api,
    pool_schedules,
    pools,
    pools_api,
    portal,
    portal_snapshots,
    sessions,
    sessions_api,
    snapshots,
    tokens,
    upcoming,
    usage,
    users,
    vms,
    vms_api,
    vms_bulk_api,
)


def routes() -> list[BaseRoute]:
    return [
        *language.routes,
        *health.routes,
        *auth.routes,
        *home.routes,
        *hypervisors.routes,
        *hypervisors_api.routes,
        *configuration.routes,
        *alerts_api.routes,
        *upcoming.routes,
        *live.routes,
        *vms.routes,
        *dhcp.routes,
        *vms_api.routes,
        *vms_bulk_api.routes,
        *pool_schedules.routes,
        *images.routes,
        *images_api.routes,
        *snapshots.routes,
        *consoles.routes,
        *consoles_api.routes,
        *api_broker.routes,
        *api_docs.routes,
        *portal.routes,
        *portal_snapshots.routes,
        *pools.routes,
        *pools_api.routes,
        *users.routes,
        *people_api.routes,
        *sessions.routes,
        *sessions_api.routes,
        *tokens.routes,
        *audit_api.routes,
        *metrics.routes,
        *usage.routes,
        *audit.routes,
    ]


def console_role_routes() -> list[BaseRoute]:
    """A console-only replica (``--role console``): health probes and the console websocket."""
    return [*health.routes, *(route for route in consoles.routes if isinstance(route, WebSocketRoute))]
