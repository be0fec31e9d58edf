"""HTTP and websocket handlers, one module per area; thin, domain logic lives elsewhere."""

from __future__ import annotations

from starlette.routing import BaseRoute

from app.views import auth, home, vms, vms_api


def routes() -> list[BaseRoute]:
    return [*auth.routes, *home.routes, *vms.routes, *vms_api.routes]
