"""A scripted HTTPS endpoint that answers like the broker API, for the launcher's transport tests.

It checks the launcher's own side of the contract (TLS verification, headers,
status handling, error messages) with canned answers and records every request.
The launcher against the real dashboard is tested end to end in test_e2e.py.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.services.tls import IssuedCertificates, issue_certificates

Answer = tuple[int, dict[str, str], Any]
Route = Answer | list[Answer] | Callable[["Recorded"], Answer]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ScriptedBroker:
    server: ThreadingHTTPServer
    url: str
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def on(self, method: str, path: str, *answers: Answer) -> None:
        """Answer ``method path`` with these answers in turn (the last one repeats)."""
        self.routes[(method, "/api/v1" + path)] = list(answers)

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == "/api/v1" + path]

    def answer(self, recorded: Recorded) -> Answer:
        self.requests.append(recorded)
        route = self.routes.get((recorded.method, recorded.path))
        if route is None:
            return 404, {}, {"error": "not_found", "message": f"no route {recorded.path}"}
        if callable(route):
            return route(recorded)
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route


def _handler(broker_ref: list[ScriptedBroker]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            recorded = Recorded(self.command, self.path, dict(self.headers.items()), body)
            status, headers, payload = broker_ref[0].answer(recorded)
            data = (
                payload if isinstance(payload, bytes) else (json.dumps(payload).encode() if payload else b"")
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

    return Handler


# The broker's certificate names 127.0.0.1 only: "localhost" is "another host name".
Certificates = IssuedCertificates


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throw-away CA and a server certificate for 127.0.0.1."""
    return issue_certificates(tmp_path_factory.mktemp("tls"))


def start_broker(certificates: Certificates | None, port: int = 0) -> ScriptedBroker:
    ref: list[ScriptedBroker] = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(ref))
    scheme = "http"
    if certificates is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificates.cert, certificates.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    broker = ScriptedBroker(server=server, url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    ref.append(broker)
    threading.Thread(target=server.serve_forever, name="scripted-broker", daemon=True).start()
    return broker


def stop_broker(broker: ScriptedBroker) -> None:
    broker.server.shutdown()
    broker.server.server_close()


@pytest.fixture
def broker(certificates: Certificates) -> Iterator[ScriptedBroker]:
    running = start_broker(certificates)
    yield running
    stop_broker(running)


@pytest.fixture
def plain_broker() -> Iterator[ScriptedBroker]:
    running = start_broker(None)
    yield running
    stop_broker(running)
