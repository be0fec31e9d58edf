"""What every JSON answer is built from: :class:`Out` models, times in UTC, :func:`answer`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema
from starlette.responses import JSONResponse


class Out(BaseModel):
    """A response body: every field it holds is described (the tests refuse any other)."""

    model_config = ConfigDict(extra="forbid")


def _utc(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


# Stored times are naive UTC (app.clock); answers say so: "2026-12-05T07:30:00Z".
UtcTime = Annotated[
    datetime,
    PlainSerializer(_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def answer(body: Out, status: int = 200, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``body`` as the JSON answer."""
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=dict(headers or {}))
