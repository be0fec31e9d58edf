"""The browser scripts' catalogue: one small static script per language, no inline script needed.

It holds the messages found in ``.js`` sources (from the ``.po`` file's locations) and
the language's plural rule, and defines ``window.KVMVDI_I18N`` for ``static/js/i18n.js``.
Its URL carries a digest of the content, so browsers may cache it for long.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass

from babel.messages.catalog import Catalog

from app.i18n.catalogues import SOURCE_LANGUAGE, available_languages, source_catalogue

# Plural expressions of .po headers are C syntax; only these characters may reach the script.
_PLURAL_EXPR = re.compile(r"^[n0-9\s%<>=!&|?:()]+$")


@dataclass(frozen=True)
class ScriptCatalogue:
    language: str
    body: bytes
    digest: str

    @property
    def url(self) -> str:
        return f"/static/i18n/{self.language}.js?v={self.digest}"


def script_messages(catalogue: Catalog) -> dict[str, str | list[str]]:
    """Translated messages used by the scripts: msgid -> text, or singular -> plural forms."""
    found: dict[str, str | list[str]] = {}
    for message in catalogue:
        if not message.id or message.fuzzy:
            continue
        if not any(path.endswith(".js") for path, _ in message.locations):
            continue
        if isinstance(message.id, tuple | list):
            forms = [str(form) for form in message.string or ()]
            if forms and all(forms):
                found[str(message.id[0])] = forms
        elif message.string:
            found[str(message.id)] = str(message.string)
    return found


@functools.cache
def script_catalogue(language: str) -> ScriptCatalogue:
    if language == SOURCE_LANGUAGE or language not in available_languages():
        messages: dict[str, str | list[str]] = {}
        plural = "(n != 1)"
    else:
        catalogue = source_catalogue(language)
        messages = script_messages(catalogue)
        plural = catalogue.plural_expr
    if not _PLURAL_EXPR.match(plural):
        raise ValueError(f"unexpected plural expression in the {language} catalogue: {plural!r}")
    data = json.dumps({"language": language, "messages": messages}, ensure_ascii=False, sort_keys=True)
    body = (
        "window.KVMVDI_I18N = "
        + data
        + ";\nwindow.KVMVDI_I18N.plural = function (n) { return Number("
        + plural
        + "); };\n"
    ).encode()
    return ScriptCatalogue(language, body, hashlib.sha256(body).hexdigest()[:12])
