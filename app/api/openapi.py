"""The OpenAPI 3.1 description, generated from the routes and their declared models.

Nothing here is written by hand per endpoint: paths and their parameters come from the
Starlette routes, security from each endpoint's guard (``required_role``), bodies and
answers from :func:`app.api.describe.describe`, and every schema from the pydantic models
(``models_json_schema``, one component per model). ``/api/v1/openapi.json`` serves the
broker and admin APIs; :func:`openapi_document` can describe any part of the app (the
tests describe every page and form too, to fuzz them).
"""

# i18n-ignore-file: the API description is read by programmers and tools, in English.
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute, Route

from app.api.describe import Described, Media, Redirect, described
from app.api.errors import ErrorBody
from app.api.ids import MAX_ID

REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
_API = "/api/v1/"
_ADMIN_API = "/api/v1/admin/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Broker API: the token POST /api/v1/login gives a desktop user.",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "Admin API: a personal API token an administrator created on the API tokens "
        "page (shown once). Read-only tokens may only GET. No cookie, no CSRF header.",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "kvmvdi_session",
        "description": "The dashboard's session cookie (the pages' own calls); unsafe methods also "
        "need the session's CSRF token in the X-CSRF-Token header.",
    },
}


def openapi_path(path: str) -> str:
    """``/vms/{vm_id:id}`` -> ``/vms/{vm_id}``."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _path_parameters(path: str) -> list[dict[str, Any]]:
    parameters = []
    for name, convertor in _PARAM.findall(path):
        # Ids are whole numbers whether or not the route converts them.
        integer = convertor in ("id", "int") or name.endswith("_id")
        schema: dict[str, Any] = (
            {"type": "integer", "minimum": 0, "maximum": MAX_ID} if integer else {"type": "string"}
        )
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return parameters


def _security(path: str, role: str | None) -> list[dict[str, list[str]]]:
    if role is None:
        return []
    if role == "admin":
        return [{"adminToken": []}, {"session": []}] if path.startswith(_ADMIN_API) else [{"session": []}]
    return [{"bearer": []}] if path.startswith(_API) else [{"session": []}]


class _Operations:
    """The described operations of some routes, and the models their schemas need."""

    def __init__(self, routes: Iterable[BaseRoute], include: Callable[[str], bool]) -> None:
        self.found: list[tuple[str, str, Described, str | None]] = []
        for route in routes:
            if not isinstance(route, Route) or not include(route.path):
                continue
            spec = described(route.endpoint)
            if spec is None:
                continue
            role = getattr(route.endpoint, "required_role", None)
            for method in sorted((route.methods or set()) - {"HEAD"}):
                self.found.append((method, route.path, spec, role))

    def models(self) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
        wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorBody, "serialization"): None}
        for _method, _path, spec, _role in self.found:
            for model in (*spec.body, spec.form, spec.query):
                if model is not None:
                    wanted[(model, "validation")] = None
            for answer in spec.responses.values():
                if isinstance(answer, type):
                    wanted[(answer, "serialization")] = None
        return list(wanted)


def _content(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _error(description: str, refs: dict[Any, Any], *, page: bool = False) -> dict[str, Any]:
    """A refusal in the error model; on a browser route, also as a page (for a browser's request)."""
    content = _content(refs[(ErrorBody, "serialization")])
    if page:
        content |= _content({"type": "string"}, "text/html") | _content({"type": "string"}, "text/plain")
    return {"description": description, "content": content}


def _answer(status: int, answer: Any, refs: dict[Any, Any]) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase
    if isinstance(answer, type):
        doc = (answer.__doc__ or "").strip().splitlines()
        return {
            "description": doc[0] if doc and doc[0] else phrase,
            "content": _content(refs[(answer, "serialization")]),
        }
    if isinstance(answer, Media):
        schema: dict[str, Any] = {"type": "string"}
        if answer.media_type == "image/png":
            schema = {"type": "string", "format": "binary"}
        elif answer.media_type == "application/json":
            schema = {"type": "object"}
        return {"description": answer.description, "content": _content(schema, answer.media_type)}
    if isinstance(answer, Redirect):
        return {
            "description": answer.description,
            "headers": {"Location": {"schema": {"type": "string"}, "description": "where to go"}},
        }
    return {"description": phrase}


def _refusals(method: str, path: str, spec: Described, role: str | None) -> dict[int, str]:
    """The refusals every endpoint of its kind may answer, in the error model."""
    found: dict[int, str] = {}
    api = path.startswith(_API) or path.startswith("/client/")
    if spec.body or spec.form or spec.query:
        found[400] = "invalid (fields names each refused field) or invalid_json"
    if spec.body or spec.form:
        found[413] = "body_too_large"
        found[415] = "unsupported_media_type"
    if role is not None and api:
        found[401] = "login_required or invalid_token (log in, or send a valid token)"
    if role is not None or method not in SAFE_METHODS:
        found[403] = "forbidden (another role), csrf_failed, read_only_token or password_change_required"
    if _PARAM.search(path):
        found[404] = "not_found (or the area's own code, such as pool_not_found)"
    if method not in SAFE_METHODS:
        found[409] = "conflict (a name taken by a change made at the same moment) or a refusal of the state"
    found[503] = "database_unavailable (see Retry-After) or another service unavailable"
    return found


def _query_parameters(model: type[BaseModel], components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = components[model.__name__]
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        | ({"description": prop["description"]} if "description" in prop else {})
        for name, prop in schema.get("properties", {}).items()
    ]


def _operation(
    method: str,
    path: str,
    spec: Described,
    role: str | None,
    refs: dict[Any, Any],
    components: dict[str, Any],
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", openapi_path(path)).rstrip("_"),
        "summary": spec.summary,
        "tags": list(spec.tags) or [_tag(path)],
        "security": _security(path, role),
    }
    if spec.description:
        operation["description"] = spec.description
    parameters = _path_parameters(path)
    if spec.query is not None:
        parameters += _query_parameters(spec.query, components)
    if parameters:
        operation["parameters"] = parameters
    if spec.body:
        schemas = [refs[(model, "validation")] for model in spec.body]
        schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
        operation["requestBody"] = {"required": spec.body_required, "content": _content(schema)}
    elif spec.form is not None:
        operation["requestBody"] = {
            "required": True,
            "content": _content(refs[(spec.form, "validation")], "application/x-www-form-urlencoded"),
        }
    responses: dict[str, Any] = {
        str(status): _answer(status, answer, refs) for status, answer in spec.responses.items()
    }
    browser = not path.startswith(_API)
    if browser and role is not None:
        # A browser that is not logged in (or must change its password first) is sent there.
        responses.setdefault("303", _answer(303, Redirect("to the log-in page first"), refs))
    for status, description in _refusals(method, path, spec, role).items():
        responses.setdefault(str(status), _error(description, refs, page=browser))
    responses["default"] = _error("any other refusal, in the error model", refs, page=browser)
    operation["responses"] = responses
    return operation


def _tag(path: str) -> str:
    if path.startswith(_ADMIN_API):
        return "admin: " + path.removeprefix(_ADMIN_API).split("/")[0]
    if path.startswith(_API):
        return "broker"
    if path.startswith("/client"):
        return "portal"
    return "pages"


def _tag_order(tag: str) -> tuple[int, str]:
    """The broker API first, then the admin API's areas, the portal and the pages."""
    rank = {"broker": 0, "portal": 2, "pages": 3}
    return (rank.get(tag, 1), tag)


def openapi_document(
    routes: Sequence[BaseRoute],
    *,
    title: str,
    description: str,
    include: Callable[[str], bool] = lambda path: path.startswith(_API),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the described routes whose path ``include`` accepts."""
    operations = _Operations(routes, include)
    refs, definitions = models_json_schema(operations.models(), ref_template=REF)
    components: dict[str, Any] = definitions.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for method, path, spec, role in operations.found:
        paths.setdefault(openapi_path(path), {})[method.lower()] = _operation(
            method, path, spec, role, refs, components
        )
    tags = sorted(
        {tag for ops in paths.values() for op in ops.values() for tag in op["tags"]}, key=_tag_order
    )
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {"title": title, "version": "1", "description": description},
        "servers": [{"url": "/"}],
        "tags": [{"name": tag} for tag in tags],
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": components},
        "paths": paths,
    }
