"""A real HTTP server that receives alert webhooks and checks their HMAC signature as a receiver would.

It runs in a thread of the test process (``http.server``). ``fail_next`` makes it answer
HTTP 503 to that many requests first, to exercise the dashboard's retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_SECRET = "webhook-shared-secret-0123456789"
# Signatures older than this are refused, as a careful receiver would (replays).
MAX_AGE = 300


@dataclass
class Received:
    body: dict[str, Any]
    signature_ok: bool
    headers: dict[str, str]


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.received: list[Received] = []
        self.refused = 0
        self.fail_next = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        receiver.refused += 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    receiver.received.append(
                        Received(json.loads(body), receiver.verify(self.headers, body), dict(self.headers))
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def verify(self, headers: Any, body: bytes) -> bool:
        timestamp = headers.get("X-KVMVDI-Timestamp", "")
        given = headers.get("X-KVMVDI-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE:
            return False
        expected = (
            "sha256=" + hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        return hmac.compare_digest(given, expected)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/vdi"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
