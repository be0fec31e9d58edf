"""uvicorn's options for the dashboard, from the ``[server]`` settings (``kvm-vdi serve`` and tests)."""

from __future__ import annotations

from typing import Any

from app.proxy.wsprotocol import DashboardWebSocketProtocol
from app.server.protocol import http_protocol
from app.settings import ServerSettings


def serving_options(server: ServerSettings) -> dict[str, Any]:
    """The protocols and connection limits; host, port, TLS and logging are the caller's."""
    return {
        "http": http_protocol(server),
        "ws": DashboardWebSocketProtocol,
        # Connections (console websockets included) beyond which new requests are answered 503.
        "limit_concurrency": server.max_connections,
        "timeout_keep_alive": server.keepalive_timeout,
    }
