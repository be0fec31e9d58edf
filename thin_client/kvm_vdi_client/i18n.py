"""The launcher's language: gettext from the standard library, catalogues beside this module.

``[ui] language`` in the configuration chooses it ("lt"); without it the environment's
``LANGUAGE``/``LC_ALL``/``LC_MESSAGES``/``LANG`` decide, as for any gettext program. The
dashboard is asked for the same language (``Accept-Language``), so its messages match.
Adding a language is one ``locale/<code>/LC_MESSAGES/kvm_vdi_client.po`` (and its ``.mo``).
"""

from __future__ import annotations

import gettext as stdlib_gettext
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "kvm_vdi_client"
SOURCE_LANGUAGE = "en"

_state: dict[str, object] = {"translations": stdlib_gettext.NullTranslations(), "language": SOURCE_LANGUAGE}


def available_languages() -> tuple[str, ...]:
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"))
    return (SOURCE_LANGUAGE, *(code for code in found if code != SOURCE_LANGUAGE))


def set_language(code: str | None) -> str:
    """Use ``code`` (or the environment's language when ``None``); returns the language in use."""
    if code is None:
        translations = stdlib_gettext.translation(DOMAIN, localedir=LOCALE_DIR, fallback=True)
        info = translations.info() if isinstance(translations, stdlib_gettext.GNUTranslations) else {}
        language = info.get("language", SOURCE_LANGUAGE) or SOURCE_LANGUAGE
    elif code == SOURCE_LANGUAGE:
        translations, language = stdlib_gettext.NullTranslations(), SOURCE_LANGUAGE
    else:
        translations = stdlib_gettext.translation(
            DOMAIN, localedir=LOCALE_DIR, languages=[code], fallback=True
        )
        language = code
    _state["translations"] = translations
    _state["language"] = language
    return language


def language() -> str:
    return str(_state["language"])


def _translations() -> stdlib_gettext.NullTranslations:
    translations = _state["translations"]
    assert isinstance(translations, stdlib_gettext.NullTranslations)
    return translations


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue; it is translated where it is shown."""
    return message


def gettext(message: str) -> str:
    return _translations().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translations().ngettext(singular, plural, n)


_ = gettext


# A desktop's state as the dashboard names it, in the launcher's words.
DESKTOP_STATES = {
    "running": N_("running"),
    "paused": N_("paused"),
    "pmsuspended": N_("suspended"),
    "shutoff": N_("shut off"),
    "crashed": N_("crashed"),
    "missing": N_("not defined"),
    "unknown": N_("unknown"),
}


def state_label(state: str) -> str:
    return gettext(DESKTOP_STATES[state]) if state in DESKTOP_STATES else state
