"""Alerts through the admin API: ``POST /api/v1/admin/alerts/test`` sends a test alert to every
channel, as the Settings page does, and says where it went."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.admin_models import TestAlertOut
from app.api.describe import describe
from app.api.errors import ApiError
from app.api.out import answer
from app.i18n import gettext as _
from app.services import services_of
from app.views.forms import record_action
from app.views.guards import admin_api


@admin_api
@describe(
    "Send a test alert to every channel (as the Settings page does)",
    responses={200: TestAlertOut},
    description="409 no_alert_channel when no channel is configured ([alerts] in the configuration).",
)
async def send_test_alert(request: Request) -> Response:
    username = request.state.user.username
    alerts = services_of(request).alerts
    submitted = alerts.send_test(username, origin="api")
    if submitted is None:
        raise ApiError(
            409, "no_alert_channel", _("No alert channel is configured ([alerts] in the configuration).")
        )
    await record_action(request, "alert_test", **submitted.details())
    return answer(
        TestAlertOut(
            channels=alerts.dispatcher.channels,
            queued=list(submitted.queued),
            dropped=list(submitted.dropped),
            held_back=submitted.held_back,
        )
    )


routes = [Route("/api/v1/admin/alerts/test", send_test_alert, methods=["POST"])]
