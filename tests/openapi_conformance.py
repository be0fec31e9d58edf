"""Every answer the suite's API calls receive is held to the generated OpenAPI description.

:class:`ConformanceRecorder` wraps a test dashboard's app (tests/dashboard.py) and keeps the
answers of its JSON routes (``/api/...`` and the portal's ``/client/...``); when the
dashboard stops, :func:`problems` checks each against the description generated from the
same app: the route must be described, a success status must be one its description names,
with a body of the described shape (JSON validated against the schema), and every JSON
error must be the one error model. A test whose calls met an undescribed route, status or
field fails at its teardown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.describe import described
from app.api.openapi import openapi_document, openapi_path

CHECKED_PREFIXES = ("/api/", "/client/")
MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    content_type: str
    body: bytes


@dataclass
class ConformanceRecorder:
    app: ASGIApp
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(CHECKED_PREFIXES):
            await self.app(scope, receive, send)
            return
        answer: dict[str, Any] = {"status": 0, "content_type": "", "body": bytearray()}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        answer["content_type"] = value.decode("latin-1")
            elif message["type"] == "http.response.body" and len(answer["body"]) < MAX_BODY:
                answer["body"].extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if answer["status"]:
            self.seen.append(
                Seen(
                    scope["method"],
                    scope["path"],
                    answer["status"],
                    answer["content_type"],
                    bytes(answer["body"]),
                )
            )

    def problems(self, routes: list[Any]) -> list[str]:
        return problems(routes, self.seen)


def _route(routes: list[Any], method: str, path: str) -> Route | None:
    scope = {"type": "http", "path": path, "method": method}
    partial = None
    for route in routes:
        if not isinstance(route, Route):
            continue
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": document["components"]})


def problems(routes: list[Any], seen: list[Seen]) -> list[str]:
    """What in ``seen`` the description of ``routes`` does not describe."""
    document = openapi_document(routes, title="conformance", description="", include=lambda _path: True)
    error_schema = {"$ref": "#/components/schemas/ErrorBody"}
    found: list[str] = []
    for answer in seen:
        label = f"{answer.method} {answer.path} -> {answer.status}"
        route = _route(routes, answer.method, answer.path)
        if route is None or answer.method not in (route.methods or ()):
            continue  # 404/405 from the router: an error model check below would be all there is
        if described(route.endpoint) is None:
            found.append(f"{label}: the route {route.path} is not described")
            continue
        operation = document["paths"][openapi_path(route.path)][answer.method.lower()]
        described_answer = operation["responses"].get(str(answer.status))
        is_json = answer.content_type.startswith("application/json")
        if described_answer is None:
            if answer.status < 400:
                found.append(f"{label}: status {answer.status} is not described")
            elif is_json:
                found += _validate(label, document, error_schema, answer.body)
            continue
        content = described_answer.get("content")
        if content is None:
            if answer.body:
                found.append(f"{label}: described without a body, answered {len(answer.body)} bytes")
            continue
        media = answer.content_type.split(";")[0].strip()
        if media not in content:
            found.append(f"{label}: answered {media!r}, described {sorted(content)}")
        elif media == "application/json" and content[media]["schema"].get("type") != "object":
            found += _validate(label, document, content[media]["schema"], answer.body)
    return found


def _validate(label: str, document: dict[str, Any], schema: dict[str, Any], body: bytes) -> list[str]:
    try:
        instance = json.loads(body)
    except ValueError:
        return [f"{label}: not JSON: {body[:80]!r}"]
    errors = sorted(_validator(document, schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [
        f"{label}: {'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:200]}" for e in errors[:3]
    ]
