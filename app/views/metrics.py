"""``GET /metrics`` on the dashboard's port: only with ``metrics.token`` set, only for its bearer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.api.describe import TEXT, describe
from app.i18n import gettext as _
from app.services import services_of


@describe("Prometheus metrics (with metrics.token set, for its bearer)", responses={200: TEXT})
async def metrics(request: Request) -> Response:
    exporter = services_of(request).metrics
    if exporter.settings.token is None:
        return PlainTextResponse(_("Not Found"), status_code=404)
    return await exporter.respond(request, token_required=True)


# A bearer-token route: the guard is the token, checked above.
metrics.required_role = "metrics"  # type: ignore[attr-defined]

routes = [Route("/metrics", metrics, methods=["GET"], name="metrics")]
