"""Which ``Origin`` may open the dashboard's websockets (``/live`` and the console).

Browsers send cookies with cross-site websocket handshakes, so each handshake
must come from the dashboard's own origin (the one it was addressed to) or one
configured as allowed. Origins compare as ``scheme://host[:port]`` in lower case
without a default port, so ``HTTPS://Example.org:443/`` is ``https://example.org``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or ``None`` if not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def own_origin(conn: HTTPConnection) -> str | None:
    """The origin this request or handshake was addressed to."""
    scheme = "https" if conn.url.scheme in ("wss", "https") else "http"
    return normalize_origin(f"{scheme}://{conn.headers.get('host', '')}")


def origin_allowed(conn: HTTPConnection, extra_origins: Iterable[str]) -> bool:
    """Whether the handshake's ``Origin`` is the dashboard's own origin or one of ``extra_origins``."""
    origin = normalize_origin(conn.headers.get("origin", ""))
    if origin is None:
        return False
    allowed = {own_origin(conn), *(normalize_origin(o) for o in extra_origins)}
    allowed.discard(None)
    return origin in allowed
