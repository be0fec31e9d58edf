"""The one reader of JSON request bodies: bounded, strict, answered in the error model.

Every JSON endpoint reads its body through :func:`read_body` (or :func:`read_json`
when the model depends on the body). Whatever is wrong with a body becomes a
:class:`BodyError`, which the app answers as
``{"error": code, "message": text, "fields": {field: text}}``:

- more than ``MAX_JSON_BYTES`` -> 413 ``body_too_large`` (Content-Length checked
  before reading, streamed bodies counted as they arrive);
- a Content-Type other than JSON -> 415 ``unsupported_media_type``;
- not UTF-8, not JSON, nested deeper than ``MAX_DEPTH``, more than ``MAX_VALUES``
  values, numbers longer than ``MAX_NUMBER_DIGITS`` digits, NaN or Infinity,
  duplicate keys, lone surrogates, or not an object -> 400 ``invalid_json``;
- a value the endpoint's model refuses (wrong type, unknown field, out of range)
  -> 400 ``invalid``, naming each field.

The depth is measured on the raw bytes before anything is parsed, so a hostile
body never reaches a recursive parser; models validate in strict mode, so a
string is never taken for a number nor ``"maybe"`` for a boolean.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from app.api.errors import ApiError
from app.api.fields import errors_of
from app.i18n import gettext as _

MAX_JSON_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_VALUES = 10_000
# Enough for any 64-bit integer or double written out; Python's own limit is 4300.
MAX_NUMBER_DIGITS = 20

M = TypeVar("M", bound=BaseModel)

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES = ("application/json",)


class BodyError(ApiError):
    """A request body refused, answered in the error model with ``fields`` (``body`` when the
    whole body is at fault)."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, str] | None = None) -> None:
        # A refused oversized body is not read to its end: the connection cannot be reused.
        headers = {"Connection": "close"} if status == 413 else None
        super().__init__(
            status, code, message, fields=fields if fields is not None else {"body": message}, headers=headers
        )


def _invalid_json(message: str) -> NoReturn:
    raise BodyError(
        400,
        "invalid_json",
        _("The body is not an acceptable JSON object: {message}.").format(message=message),
    )


def too_large(limit: int) -> BodyError:
    return BodyError(413, "body_too_large", _("The body is larger than {limit} bytes.").format(limit=limit))


def _shape(raw: bytes) -> tuple[int, int]:
    """(values, deepest nesting) of ``raw``, not counting what is inside strings.

    Values are counted from separators and brackets, so this stays cheap; the
    nesting is only walked once that count is known to be within bounds.
    """
    skeleton = _STRING.sub(b"", raw)
    brackets = skeleton.translate(None, _NOT_BRACKETS)
    values = skeleton.count(b",") + skeleton.count(b":") + len(brackets) // 2
    if values >= MAX_VALUES:
        return values, 0
    deepest = depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH or depth < 0:
            break
    return values, deepest


def _number(text: str) -> str:
    if sum(ch.isdigit() for ch in text) > MAX_NUMBER_DIGITS:
        _invalid_json(_("numbers have at most {count} digits").format(count=MAX_NUMBER_DIGITS))
    return text


def _parse_int(text: str) -> int:
    return int(_number(text))


def _parse_float(text: str) -> float:
    value = float(_number(text))
    if not math.isfinite(value):
        _invalid_json(_("numbers must be finite"))
    return value


def _no_constants(name: str) -> NoReturn:
    _invalid_json(_("{name} is not a JSON number").format(name=name))


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        _invalid_json(_("a key appears twice in one object"))
    return found


def _check_strings(value: Any) -> None:
    # Recursion is safe here: the depth was bounded before parsing.
    if isinstance(value, str):
        if _SURROGATE.search(value):
            _invalid_json(_("strings must not hold lone surrogates"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from ``raw`` within the limits above; an empty body is ``{}``."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _invalid_json(_("it is not UTF-8"))
    values, deepest = _shape(raw)
    if values >= MAX_VALUES:
        _invalid_json(_("it holds more than {count} values").format(count=MAX_VALUES))
    if deepest > MAX_DEPTH:
        _invalid_json(_("it is nested deeper than {count} levels").format(count=MAX_DEPTH))
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_no_constants,
        )
    except json.JSONDecodeError as exc:
        _invalid_json(
            _("{problem} at line {line} column {column}").format(
                problem=exc.msg, line=exc.lineno, column=exc.colno
            )
        )
    except (ValueError, RecursionError):
        _invalid_json(_("it cannot be read"))
    if not isinstance(value, dict):
        _invalid_json(_("send an object ({...})"))
    _check_strings(value)
    return value


def _check_media_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media, _sep, params = content_type.partition(";")
    media = media.strip().lower()
    charset = re.search(r"charset\s*=\s*\"?([^\";\s]+)", params, re.IGNORECASE)
    if (media not in _JSON_TYPES and not media.endswith("+json")) or (
        charset is not None and charset.group(1).lower() not in ("utf-8", "utf8")
    ):
        raise BodyError(415, "unsupported_media_type", _("Send the body as application/json (UTF-8)."))


async def read_bytes(request: Request, limit: int = MAX_JSON_BYTES) -> bytes:
    """The raw body, refused as soon as it is known to be larger than ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object (``{}`` when empty), or :class:`BodyError`."""
    raw = await read_bytes(request, limit)
    if raw.strip():
        _check_media_type(request)
    return parse_json(raw)


def validate(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model`` in strict mode, or a 400 ``invalid`` naming each field."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        fields = errors_of(exc, whole="body")
    labels: Mapping[str, str] = getattr(model, "field_labels", {})
    if labels:
        # Where the forms name each field by its label, so does the API.
        fields = {
            field: f"{_(labels[field]) if field in labels else field}: {text}"
            for field, text in fields.items()
        }
        message = "; ".join(fields.values())
    else:
        message = "; ".join(f"{field}: {text}" for field, text in fields.items())
    raise BodyError(400, "invalid", _("Check the request: {message}.").format(message=message), fields)


async def read_body(request: Request, model: type[M]) -> M:
    """Read and validate the request body as ``model`` (see the module's refusals)."""
    return validate(model, await read_json(request))


def read_query(request: Request, model: type[M]) -> M:
    """The query string as ``model`` (values converted from text: ``"3"``, ``"true"``), or a
    400 ``invalid`` naming each parameter. A parameter given twice counts where the model
    takes a list; otherwise the last one counts. Unknown parameters are ignored."""
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        values = request.query_params.getlist(name)
        if not values:
            continue
        data[name] = values if _is_list(field.annotation) else values[-1]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = errors_of(exc, whole="query")
    message = "; ".join(f"{field}: {text}" for field, text in fields.items())
    raise BodyError(400, "invalid", _("Check the query: {message}.").format(message=message), fields)


def _is_list(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is list
