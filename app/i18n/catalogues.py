"""The gettext catalogues under ``app/locale``: which languages exist and their translations.

The catalogues are ``<code>/LC_MESSAGES/messages.po`` (one file per language, edited by
translators) compiled to ``messages.mo`` beside them (``make catalogues``; a test keeps the
compiled files in step with the sources). English is the language of the source strings.
"""

from __future__ import annotations

import functools
import gettext as stdlib_gettext
from pathlib import Path

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"


@functools.cache
def available_languages() -> tuple[str, ...]:
    """English first, then every language with a catalogue, by code."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return (SOURCE_LANGUAGE, *(code for code in found if code != SOURCE_LANGUAGE))


def language_name(code: str) -> str:
    """The language's own name for itself ("English", "Lietuvių"), for language switches."""
    name = Locale.parse(code).get_display_name(code) or code
    return name[:1].upper() + name[1:]


def po_path(code: str) -> Path:
    return LOCALE_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(code: str) -> stdlib_gettext.NullTranslations:
    """The compiled catalogue of ``code``; English (and an unknown code) translate to themselves."""
    if code == SOURCE_LANGUAGE or code not in available_languages():
        return stdlib_gettext.NullTranslations()
    return stdlib_gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[code])


@functools.cache
def source_catalogue(code: str) -> Catalog:
    """The ``.po`` file of ``code`` as Babel reads it: with each message's source locations."""
    with po_path(code).open("rb") as handle:
        return read_po(handle, locale=code)
