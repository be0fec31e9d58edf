"""Fuzz every operation of an OpenAPI description with schemathesis, as one caller.

Each operation gets a fixed number of generated requests (valid ones, then invalid ones),
derandomized so a run is reproducible. The requests are sent with ``requests`` (what
schemathesis speaks), so :func:`fuzz` is blocking: run it in a thread beside the dashboard's
event loop. Every answer of 500 or more, and every request that got no answer at all, is
collected with the ``curl`` command that reproduces it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def _no_headers(_path: str) -> Mapping[str, str]:
    return {}


@dataclass(frozen=True)
class Caller:
    """Who sends the requests: cookies, and per path the headers (a bearer token, the CSRF token)."""

    name: str
    cookies: Mapping[str, str] = field(default_factory=dict)
    headers: Callable[[str], Mapping[str, str]] = _no_headers


@dataclass
class Findings:
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    # "METHOD /path: what happened\n    curl ..."
    failures: list[str] = field(default_factory=list)
    # Operations of which a mode could make no request (e.g. nothing invalid without inputs).
    unsatisfiable: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def fuzz(
    document: dict[str, Any],
    base_url: str,
    caller: Caller,
    *,
    examples: int,
    modes: tuple[GenerationMode, ...] = MODES,
    path_parameters: Mapping[str, int] | None = None,
    skip: Callable[[str, str], bool] = lambda _method, _path: False,
    negate: Callable[[str, str], bool] = lambda _method, _path: True,
) -> Findings:
    """Send ``examples`` generated requests per mode to every operation of ``document``.

    ``path_parameters`` fixes those path parameters wherever they occur (the others are
    generated), e.g. so that an account the caller must not lock itself out of is not hit.
    ``negate`` says which operations also get invalid requests (the others only valid ones).
    """
    schema = schemathesis.openapi.from_dict(document)
    found = Findings()
    with requests.Session() as session:
        session.cookies.update(dict(caller.cookies))
        for operation in _operations(schema):
            if skip(operation.method.upper(), operation.path):
                continue
            started = time.monotonic()
            fixed = {k: v for k, v in (path_parameters or {}).items() if "{" + k + "}" in operation.path}
            for mode in modes:
                if mode is GenerationMode.NEGATIVE and not negate(operation.method.upper(), operation.path):
                    continue
                if mode is GenerationMode.NEGATIVE and not can_be_invalid(document, operation):
                    # Hypothesis would search in vain for ~30 s before giving up.
                    found.unsatisfiable.append(f"{operation.method.upper()} {operation.path} ({mode.value})")
                    continue
                _run(operation, mode, fixed, session, base_url, caller, examples, found)
            found.seconds[f"{operation.method.upper()} {operation.path}"] = time.monotonic() - started
    return found


def _plain_text(schema: Mapping[str, Any]) -> bool:
    """Any text is valid: a string without a pattern, length, enumeration or format."""
    constraints = {"pattern", "minLength", "maxLength", "enum", "const", "format"}
    return schema.get("type") == "string" and not constraints & set(schema)


def can_be_invalid(document: Mapping[str, Any], operation: Any) -> bool:
    """Whether an invalid request to ``operation`` exists at all: credentials, a JSON body,
    a parameter that is not any text, or a form with a field that is required or not any text.
    A public form or path of plain text fields accepts everything a browser can send, so there
    is nothing to negate."""
    spec = document["paths"][operation.path][operation.method.lower()]
    # Credentials can be negated (a forged session cookie or bearer token).
    if spec.get("security"):
        return True
    if any(not _plain_text(parameter["schema"]) for parameter in spec.get("parameters", ())):
        return True
    content = spec.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return True
    form = content.get("application/x-www-form-urlencoded")
    if form is None:
        return False
    ref = form["schema"]["$ref"].rsplit("/", 1)[-1]
    model = document["components"]["schemas"][ref]
    if model.get("required"):
        return True
    # A repeated field (a list of text) accepts any text too.
    fields = [
        field.get("items", field) if field.get("type") == "array" else field
        for field in model.get("properties", {}).values()
    ]
    return not all(_plain_text(field) for field in fields)


def _operations(schema: Any) -> Iterable[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


def _run(
    operation: Any,
    mode: GenerationMode,
    fixed: dict[str, int],
    session: requests.Session,
    base_url: str,
    caller: Caller,
    examples: int,
    found: Findings,
) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
    def send(case: Any) -> None:
        found.sent[label] += 1
        try:
            response = case.call(
                base_url=base_url,
                session=session,
                headers=dict(caller.headers(operation.path)),
                allow_redirects=False,
                timeout=60,
            )
        except requests.RequestException as exc:
            found.failures.append(f"{label}: no answer ({exc!r})\n    {_curl(case, base_url)}")
            return
        found.statuses[response.status_code] += 1
        if response.status_code >= 500:
            text = response.text[:160]
            found.failures.append(f"{label}: {response.status_code} {text}\n    {_curl(case, base_url)}")

    try:
        send()
    except Unsatisfiable:
        # Nothing invalid can be made of an operation without parameters or body.
        found.unsatisfiable.append(f"{label} ({mode.value})")


def _curl(case: Any, base_url: str) -> str:
    try:
        return str(case.as_curl_command(base_url=base_url))
    except Exception as exc:  # a reproduction that cannot be written still names the case
        return f"(no curl command: {exc!r}) {case!r:.300}"
