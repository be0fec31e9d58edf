"""The one error model of every JSON answer: ``{"error": code, "message": text}`` and, where they
apply, ``fields`` (a refused body: what is wrong with each field) and a few named details.

Handlers answer errors with :func:`error_response` or raise :class:`ApiError`; the app's exception
handler turns the latter into the former. The body is :class:`ErrorBody`, so the OpenAPI
description and every answer share one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.api.out import Out


class RdpFailover(Out):
    protocol: Literal["rdp"]
    host: str
    domain: str


class HorizonFailover(Out):
    protocol: Literal["horizon"]
    server: str
    pool: str


Failover = Annotated[RdpFailover | HorizonFailover, Field(discriminator="protocol")]


class Desktop(Out):
    """A desktop as its user sees it."""

    vm_id: int
    name: str
    state: str


class ErrorBody(Out):
    """What every JSON API answers when it does not do what was asked."""

    error: str = Field(description="a stable code (invalid, not_found, conflict, ...); programs test this")
    message: str = Field(description="what went wrong and what to do, for a person")
    fields: dict[str, str] | None = Field(
        default=None, description="a refused body or query: what is wrong with each field"
    )
    failover: Failover | None = Field(default=None, description="the pool's fallback, when it has one")
    desktop: Desktop | None = Field(default=None, description="the desktop that could not be started")
    vms: list[str] | None = Field(
        default=None, description="the VMs the refusal names (keeping a hypervisor in use, refused by a pool)"
    )


def error_body(
    code: str,
    message: str,
    *,
    fields: Mapping[str, str] | None = None,
    failover: Mapping[str, str] | None = None,
    desktop: Mapping[str, object] | None = None,
    vms: list[str] | None = None,
) -> dict[str, object]:
    """The error model as JSON-ready data (validated: an undescribed detail is a bug found at once)."""
    body = ErrorBody.model_validate(
        {
            "error": code,
            "message": message,
            "fields": dict(fields) if fields is not None else None,
            "failover": failover,
            "desktop": desktop,
            "vms": vms,
        }
    )
    return body.model_dump(mode="json", exclude_none=True)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    fields: Mapping[str, str] | None = None,
    failover: Mapping[str, str] | None = None,
    desktop: Mapping[str, object] | None = None,
    vms: list[str] | None = None,
) -> JSONResponse:
    """An error answer in the one model."""
    body = error_body(code, message, fields=fields, failover=failover, desktop=desktop, vms=vms)
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


class ApiError(Exception):
    """Raised by a JSON handler (or what it calls) to answer ``status`` in the error model."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, fields=self.fields, headers=self.headers)


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    """The app's exception handler for :class:`ApiError` (and its kin, the refused bodies)."""
    assert isinstance(exc, ApiError)
    return exc.response()


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)
