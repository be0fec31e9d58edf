"""Jinja2 templates for the dashboard and the portal."""

from __future__ import annotations

from pathlib import Path

from starlette.templating import Jinja2Templates

from app.settings import Settings

TEMPLATES_DIR = Path(__file__).parent / "templates"


def make_templates(settings: Settings) -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    env = templates.env
    env.globals["product_name"] = "KVM-VDI"
    env.globals["demo_mode"] = settings.demo
    return templates
