"""Jinja2 templates for the dashboard and the portal, translated with the i18n extension."""

from __future__ import annotations

from pathlib import Path

from starlette.templating import Jinja2Templates

from app.i18n import available_languages, current_language, language_name
from app.i18n.context import gettext, ngettext, npgettext, pgettext
from app.i18n.formatting import FILTERS
from app.i18n.labels import hypervisor_state_label, kind_label, operation_state_label, state_label
from app.i18n.scripts import script_catalogue
from app.settings import Settings

TEMPLATES_DIR = Path(__file__).parent / "templates"


def make_templates(settings: Settings) -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    env = templates.env
    env.add_extension("jinja2.ext.i18n")
    # ``_``, ``gettext`` and ``ngettext`` translate into the request's language; newstyle
    # escapes the translation and fills ``%(name)s`` placeholders itself.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext, ngettext, newstyle=True, pgettext=pgettext, npgettext=npgettext
    )
    # Line breaks inside {% trans %} blocks are layout, not part of the message.
    env.policies["ext.i18n.trimmed"] = True
    env.filters.update(FILTERS)
    env.globals["product_name"] = "KVM-VDI"
    env.globals["demo_mode"] = settings.demo
    env.globals["current_language"] = current_language
    env.globals["languages"] = [(code, language_name(code)) for code in available_languages()]
    env.globals["state_label"] = state_label
    env.globals["kind_label"] = kind_label
    env.globals["operation_state_label"] = operation_state_label
    env.globals["hypervisor_state_label"] = hypervisor_state_label
    env.globals["script_catalogue_url"] = lambda: script_catalogue(current_language()).url
    return templates
