"""Messages kept to be shown later, in the reader's language: a msgid and its named arguments.

Text written once and read later by many people (an operation's progress, stored and
broadcast to every admin page) cannot be translated where it is written: the writer is a
background task, and the readers speak different languages. Such text is a :class:`Message`
(marked with :func:`M_` or :func:`Mn_`, which the catalogue extraction knows), stored as
JSON beside its English rendering and translated where it is shown. Arguments that come
from outside (a path, a libvirt error) are shown as they are; whole numbers in the reader's
number format; an argument that is itself a :class:`Message` in the reader's language.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.i18n.catalogues import SOURCE_LANGUAGE
from app.i18n.context import gettext, ngettext, use_language
from app.i18n.formatting import format_number


@dataclass(frozen=True)
class Message:
    msgid: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    plural: str | None = None
    n: int = 0
    # Sentences shown one after another (then msgid is empty).
    parts: tuple[Message, ...] = ()

    def text(self) -> str:
        """The message in the current language."""
        if self.parts:
            return " ".join(part.text() for part in self.parts)
        template = (
            ngettext(self.msgid, self.plural, self.n) if self.plural is not None else gettext(self.msgid)
        )
        values = {name: _shown(value) for name, value in self.args.items()}
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            # A translation with broken placeholders (the catalogue test forbids it): say it in English.
            return self.msgid.format(**values)

    def english(self) -> str:
        with use_language(SOURCE_LANGUAGE):
            return self.text()

    def __str__(self) -> str:
        return self.text()

    def __add__(self, other: Message) -> Message:
        """This message, then ``other`` (sentences one after another)."""
        return Message(parts=(*(self.parts or (self,)), *(other.parts or (other,))))

    def as_dict(self) -> dict[str, Any]:
        if self.parts:
            return {"parts": [part.as_dict() for part in self.parts]}
        data: dict[str, Any] = {"msgid": self.msgid, "args": {k: _stored(v) for k, v in self.args.items()}}
        if self.plural is not None:
            data["plural"], data["n"] = self.plural, self.n
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        if "parts" in data:
            return cls(parts=tuple(cls.from_dict(part) for part in data["parts"]))
        args = {
            str(name): cls.from_dict(value) if isinstance(value, Mapping) else value
            for name, value in dict(data.get("args") or {}).items()
        }
        plural = data.get("plural")
        return cls(str(data["msgid"]), args, None if plural is None else str(plural), int(data.get("n") or 0))


def M_(msgid: str, **args: Any) -> Message:
    """Mark ``msgid`` for the catalogue and keep it with ``args``, to be translated where shown."""
    return Message(msgid, args)


def Mn_(singular: str, plural: str, n: int, **args: Any) -> Message:
    """:func:`M_` with plural forms chosen by ``n``."""
    return Message(singular, args, plural, n)


def _shown(value: Any) -> Any:
    if isinstance(value, Message):
        return value.text()
    if isinstance(value, int) and not isinstance(value, bool):
        return format_number(value)
    return value


def _stored(value: Any) -> Any:
    if isinstance(value, Message):
        return value.as_dict()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def stored(text: str | Message) -> tuple[str, str]:
    """(English text, JSON of the message or "") of a message to store."""
    if isinstance(text, Message):
        return text.english(), text.to_json()
    return text, ""


def kept_message(kept: str | Mapping[str, Any] | None) -> Message | None:
    """The message stored as ``kept`` (its JSON or dict); None when there is none or it cannot be read."""
    if not kept:
        return None
    try:
        return Message.from_dict(json.loads(kept) if isinstance(kept, str) else kept)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def shown(text: str, kept: str | Mapping[str, Any] | None) -> str:
    """A stored message in the current language: ``text`` as it is when there is no message kept
    with it (rows written before messages were kept, text from outside)."""
    message = kept_message(kept)
    if message is None:
        return text
    try:
        return message.text()
    except (ValueError, KeyError, TypeError, AttributeError):
        return text


# Live events carry "<key>_i18n" (a message as a dict or its JSON; "" for none) beside "<key>"
# (its English text).
LIVE_SUFFIX = "_i18n"


def live_fields(key: str, text: str | Message) -> dict[str, Any]:
    """``{key: English text}`` and, for a :class:`Message`, ``{key_i18n: message}`` for live events."""
    if isinstance(text, Message):
        return {key: text.english(), key + LIVE_SUFFIX: text.as_dict()}
    return {key: text}


def localised(data: dict[str, Any]) -> dict[str, Any]:
    """A live event's data with every kept message translated into the current language."""
    if not any(key.endswith(LIVE_SUFFIX) for key in data):
        return data
    out = {key: value for key, value in data.items() if not key.endswith(LIVE_SUFFIX)}
    for key, value in data.items():
        if key.endswith(LIVE_SUFFIX) and isinstance(value, Mapping | str):
            name = key[: -len(LIVE_SUFFIX)]
            out[name] = shown(str(data.get(name) or ""), value)
    return out
