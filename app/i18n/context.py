"""The language of the work in hand, and the gettext functions that translate into it.

A context variable follows a request through every ``await`` and into the tasks it
starts; outside a request (background duties, the CLI) the server-wide default applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from app.i18n.catalogues import SOURCE_LANGUAGE, translations

_default = [SOURCE_LANGUAGE]
_language: ContextVar[str | None] = ContextVar("kvmvdi_language", default=None)


def set_default_language(code: str) -> None:
    """The server-wide default (``[i18n] default_language``)."""
    _default[0] = code


def current_language() -> str:
    return _language.get() or _default[0]


@contextmanager
def use_language(code: str) -> Iterator[None]:
    token = _language.set(code)
    try:
        yield
    finally:
        _language.reset(token)


def gettext(message: str) -> str:
    return translations(current_language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current_language()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return translations(current_language()).pgettext(context, message)


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return translations(current_language()).npgettext(context, singular, plural, n)


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue without translating it here (it is translated where shown)."""
    return message


class LazyString:
    """A marked message translated each time it is shown (module-level labels and constants)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __str__(self) -> str:
        return gettext(self.message)

    def __repr__(self) -> str:
        return f"LazyString({self.message!r})"

    def __html__(self) -> str:
        from markupsafe import escape

        return str(escape(str(self)))


def lazy_gettext(message: str) -> LazyString:
    return LazyString(message)
