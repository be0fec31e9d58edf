"""What each endpoint takes and answers, declared on the handler itself.

``@describe(...)`` puts a :class:`Described` on the handler: its request body (a JSON model
or a form model), its query model and, per status, its answer (a response model, a media
type, or nothing). The guards copy it onto the function they wrap, so a route's endpoint
carries it. :mod:`app.api.openapi` builds the OpenAPI description from the app's routes and
these declarations; the tests walk the routes and refuse one that is not described, and
validate the suite's real answers against the description.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.routing import BaseRoute, Route

E = TypeVar("E", bound=Callable[..., Any])


@dataclass(frozen=True)
class Media:
    """An answer that is not JSON: a page, a download, a picture."""

    media_type: str
    description: str


PAGE = Media("text/html", "the page")
CSV = Media("text/csv", "CSV, streamed (a header line, then one line per record)")
PNG = Media("image/png", "the picture")
TEXT = Media("text/plain", "plain text")


@dataclass(frozen=True)
class Redirect:
    """A ``303 See Other`` to the page that shows the outcome (forms), or to a log-in page."""

    description: str = "to the page that shows the outcome"


REDIRECT = Redirect()
# No body (204 No Content).
EMPTY = None

Answer = type[BaseModel] | Media | Redirect | None


@dataclass(frozen=True)
class Described:
    summary: str
    # status -> a response model, a media type, a redirect or EMPTY
    responses: Mapping[int, Answer]
    description: str = ""
    # JSON request body: one model, or several (the endpoint tells them apart, see ``body_choice``).
    body: tuple[type[BaseModel], ...] = ()
    body_required: bool = True
    # application/x-www-form-urlencoded body (browser forms).
    form: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def describe(
    summary: str,
    *,
    responses: Mapping[int, Answer],
    description: str = "",
    body: type[BaseModel] | tuple[type[BaseModel], ...] = (),
    body_required: bool = True,
    form: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    tags: tuple[str, ...] = (),
) -> Callable[[E], E]:
    """Declare an endpoint's request and answers (put it under the guard decorator)."""
    described = Described(
        summary=summary,
        responses=dict(responses),
        description=description,
        body=body if isinstance(body, tuple) else (body,),
        body_required=body_required,
        form=form,
        query=query,
        tags=tags,
    )

    def mark(endpoint: E) -> E:
        endpoint.described = described  # type: ignore[attr-defined]
        return endpoint

    return mark


def described(endpoint: object) -> Described | None:
    found = getattr(endpoint, "described", None)
    return found if isinstance(found, Described) else None


def request_bodies(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], tuple[type[BaseModel], ...]]:
    """(method, route path) -> the JSON body models of every endpoint that reads one."""
    found: dict[tuple[str, str], tuple[type[BaseModel], ...]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        spec = described(route.endpoint)
        if spec is not None and spec.body:
            for method in (route.methods or set()) - {"HEAD"}:
                found[(method, route.path)] = spec.body
    return found
