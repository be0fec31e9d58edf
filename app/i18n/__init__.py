"""English and Lithuanian (and any language with a catalogue): translations, choice, formatting.

Messages are marked with :func:`gettext` (``_``) and :func:`ngettext` everywhere text
reaches a person: templates, views, JSON ``message`` texts, e-mails, the CLI. They
translate into the language of the current request (a context variable set by
:class:`~app.i18n.middleware.LanguageMiddleware`), or the server-wide default outside one.
Adding a language is one new ``app/locale/<code>/LC_MESSAGES/messages.po`` (docs/translating.md).
"""

from app.i18n.catalogues import available_languages, language_name
from app.i18n.context import (
    N_,
    current_language,
    gettext,
    lazy_gettext,
    ngettext,
    set_default_language,
    use_language,
)

_ = gettext

__all__ = [
    "N_",
    "_",
    "available_languages",
    "current_language",
    "gettext",
    "language_name",
    "lazy_gettext",
    "ngettext",
    "set_default_language",
    "use_language",
]
