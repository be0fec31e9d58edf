"""The Settings page: the effective configuration (secrets masked), the dashboard's SSH key, and the
alert channels with their delivery counts and a test alert."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.alerts import Alerts
from app.api.describe import PAGE, REDIRECT, describe
from app.api.forms import NoFields
from app.i18n import gettext as _
from app.services import services_of
from app.settings import effective_settings
from app.views.forms import record_action, redirect_with_toast, render
from app.views.guards import admin_required


def _sections(data: dict[str, Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Top-level scalars under "general", each nested table as its own section."""
    general = [(key, value) for key, value in data.items() if not isinstance(value, dict)]
    nested = [(key, list(value.items())) for key, value in data.items() if isinstance(value, dict)]
    return [("general", general), *nested]


@admin_required
@describe("The settings page", responses={200: PAGE})
async def settings_page(request: Request) -> Response:
    services = services_of(request)
    return render(
        request,
        "settings.html",
        {
            "active": "settings",
            "title": _("Settings"),
            "sections": _sections(effective_settings(services.settings)),
            "ssh_key": services.ssh_key,
            "config_file": services.settings.model_config.get("toml_file"),
            "alerts": alert_status(services.alerts),
        },
    )


def alert_status(alerts: Alerts) -> dict[str, Any]:
    dispatcher = alerts.dispatcher
    errors = dispatcher.last_errors()
    return {
        "channels": [
            {
                "name": name,
                "sent": dispatcher.delivered.get((name, "sent"), 0),
                "failed": dispatcher.delivered.get((name, "failed"), 0),
                "dropped": dispatcher.delivered.get((name, "dropped"), 0),
                "last_error": errors.get(name, ""),
            }
            for name in dispatcher.channels
        ]
    }


@admin_required
@describe("Send a test alert to every channel", form=NoFields, responses={303: REDIRECT})
async def send_test_alert(request: Request) -> Response:
    user = request.state.user
    submitted = services_of(request).alerts.send_test(user.username, origin="settings")
    if submitted is None:
        return redirect_with_toast(
            "/settings", _("No alert channel is configured ([alerts] in the configuration)."), "warning"
        )
    await record_action(request, "alert_test", **submitted.details())
    if submitted.held_back:
        return redirect_with_toast(
            "/settings",
            _("Test alert held back by the rate limit: the latest goes out when its window ends."),
            "warning",
        )
    return redirect_with_toast(
        "/settings", _("Test alert queued for {names}.").format(names=", ".join(submitted.queued))
    )


routes = [
    Route("/settings", settings_page, methods=["GET"], name="settings"),
    Route("/settings/alerts/test", send_test_alert, methods=["POST"], name="settings_test_alert"),
]
