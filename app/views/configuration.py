"""The Settings page: the effective configuration (secrets masked) and the dashboard's SSH key."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.auth.session import admin_required
from app.services import services_of
from app.settings import effective_settings
from app.views.forms import render


def _sections(data: dict[str, Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Top-level scalars under "general", each nested table as its own section."""
    general = [(key, value) for key, value in data.items() if not isinstance(value, dict)]
    nested = [(key, list(value.items())) for key, value in data.items() if isinstance(value, dict)]
    return [("general", general), *nested]


@admin_required
async def settings_page(request: Request) -> Response:
    services = services_of(request)
    return render(
        request,
        "settings.html",
        {
            "active": "settings",
            "title": "Settings",
            "sections": _sections(effective_settings(services.settings)),
            "ssh_key": services.ssh_key,
            "config_file": services.settings.model_config.get("toml_file"),
        },
    )


routes = [Route("/settings", settings_page, methods=["GET"], name="settings")]
