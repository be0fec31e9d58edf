"""Which language a request gets: the chosen one (cookie), else the browser's, else the default.

The cookie is set by the language switch and, at log-in, from the preference saved with
the account; ``Accept-Language`` is matched by quality, a regional tag ("lt-LT") matching
its language ("lt").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

LANGUAGE_COOKIE = "kvmvdi_lang"
# A year: the choice is a preference, not a secret.
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600
MAX_ACCEPT_LANGUAGE_ITEMS = 32


def parse_accept_language(header: str) -> list[str]:
    """The language tags of an ``Accept-Language`` header, most wanted first (q=0 left out)."""
    weighted: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")[:MAX_ACCEPT_LANGUAGE_ITEMS]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        tag = tag.strip().lower()
        if tag and quality > 0:
            weighted.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


def match_language(tag: str, available: Sequence[str]) -> str | None:
    """``tag`` ("lt", "lt-LT", "LT_lt") as one of ``available``, or ``None``."""
    tag = tag.strip().replace("_", "-").lower()
    if tag in available:
        return tag
    primary = tag.split("-", 1)[0]
    return primary if primary in available else None


def choose_language(
    *, chosen: str | None, accept_language: str, default: str, available: Sequence[str]
) -> str:
    if chosen and (match := match_language(chosen, available)):
        return match
    for tag in parse_accept_language(accept_language):
        if tag == "*":
            break
        if match := match_language(tag, available):
            return match
    return default


def command_language(default: str, environ: Mapping[str, str] | None = None) -> str:
    """The language of ``kvm-vdi``'s output: the environment's (``LANGUAGE``, ``LC_ALL``,
    ``LC_MESSAGES``, ``LANG``, as gettext reads them) when there is a catalogue for it, else ``default``."""
    from app.i18n.catalogues import available_languages

    env = os.environ if environ is None else environ
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(variable, "")
        if not value:
            continue
        for tag in value.split(":"):
            code = tag.split(".", 1)[0].split("@", 1)[0]
            if code in ("C", "POSIX"):
                return default
            if match := match_language(code, available_languages()):
                return match
        break
    return default
