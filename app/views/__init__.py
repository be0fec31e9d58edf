"""HTTP and websocket handlers, one module per area; thin, domain logic lives elsewhere."""

from __future__ import annotations

from starlette.routing import BaseRoute

from app.views import api_broker, auth, home, portal


def routes() -> list[BaseRoute]:
    return [*auth.routes, *home.routes, *api_broker.routes, *portal.routes]
