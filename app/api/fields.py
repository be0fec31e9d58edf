"""pydantic's validation errors as the error model's ``fields``: one message per field."""

from __future__ import annotations

from pydantic import ValidationError

from app.i18n import N_
from app.i18n import gettext as _

_MESSAGES = {"extra_forbidden": N_("unknown field"), "missing": N_("required")}


def errors_of(exc: ValidationError, *, whole: str = "form") -> dict[str, str]:
    """``{field: message}``, the first message per top-level field.

    A nested place is named in the message (``item 2: ...``); errors about the
    whole body go under ``whole``. pydantic's messages never quote the input,
    so no submitted secret comes back.
    """
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = error.get("loc") or (whole,)
        known = _MESSAGES.get(error.get("type", ""))
        message = _(known) if known is not None else str(error.get("msg", "invalid value"))
        message = message.removeprefix("Value error, ")
        inner = [f"item {part + 1}" if isinstance(part, int) else str(part) for part in loc[1:]]
        if inner:
            message = f"{' '.join(inner)}: {message}"
        errors.setdefault(str(loc[0]), message)
    return errors
