"""The library code the dashboard builds on is the code it was tested with.

``app/proxy/wsprotocol.py`` and ``app/server/protocol.py`` subclass uvicorn's
websocket and HTTP protocols and lean on their internals; the CONNECT gateway
drives h11 itself. uvicorn is pinned to a minor release in ``pyproject.toml`` and
every package to an exact version in ``constraints.txt``. When an upgrade changes
a method the dashboard overrides (or an attribute it reads), these tests fail and
say what to re-read; after checking the override against the new code, record the
new digest here.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from importlib import metadata
from pathlib import Path

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from app.proxy.wsprotocol import DashboardWebSocketProtocol
from app.server.protocol import HeadLimitedProtocol

ROOT = Path(__file__).resolve().parent.parent

# The uvicorn methods the dashboard's protocols override or call through super(), by the
# SHA-256 (first 16 hex digits) of their source in the version the overrides were written against.
EXTENDED = {
    (WebSocketsSansIOProtocol, "app/proxy/wsprotocol.py"): {
        "handle_connect": "fe2a087aa2223cf8",
        "handle_bytes": "2b22b21bf8feb4bf",
        "send": "3b8afeb81b9b9ae8",
    },
    (HttpToolsProtocol, "app/server/protocol.py"): {
        "connection_made": "6efb565ff3d36b91",
        "connection_lost": "c91a4c9bf2e29c55",
        "data_received": "010a7ae59a5d3b1a",
        "handle_websocket_upgrade": "d5da377bfc77e588",
        "on_headers_complete": "1ea8589acfad92d8",
        "on_message_begin": "96d377fdc7c2baef",
        "on_message_complete": "1fbad42dc31fc01f",
    },
}

# Instance attributes of uvicorn's protocols that the subclasses read or write.
READ_ATTRIBUTES = {
    WebSocketsSansIOProtocol: (
        "conn",
        "handshake_complete",
        "close_sent",
        "disconnected",
        "initial_response",
        "writable",
        "transport",
    ),
    HttpToolsProtocol: ("transport", "parser", "loop"),
}


def _digest(function: object) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_the_dashboards_protocols_still_extend_uvicorns() -> None:
    assert issubclass(DashboardWebSocketProtocol, WebSocketsSansIOProtocol)
    assert issubclass(HeadLimitedProtocol, HttpToolsProtocol)


@pytest.mark.parametrize(
    ("base", "ours", "method", "recorded"),
    [
        pytest.param(base, ours, method, recorded, id=f"{base.__name__}.{method}")
        for (base, ours), methods in EXTENDED.items()
        for method, recorded in methods.items()
    ],
)
def test_the_uvicorn_code_the_dashboard_extends_is_unchanged(
    base: type, ours: str, method: str, recorded: str
) -> None:
    found = _digest(getattr(base, method))
    assert found == recorded, (
        f"uvicorn {metadata.version('uvicorn')} changed {base.__qualname__}.{method} "
        f"({inspect.getsourcefile(base)}): read the new code against the override in {ours}, "
        f"run tests/proxy and tests/test_http_limits.py, then record {found!r} in {__name__}.EXTENDED"
    )


async def test_the_uvicorn_attributes_the_dashboard_uses_exist() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never called")

    config = Config(app=app)
    config.load()
    for base, names in READ_ATTRIBUTES.items():
        protocol = base(config, ServerState(), {}, asyncio.get_running_loop())
        missing = [name for name in names if not hasattr(protocol, name)]
        assert not missing, f"uvicorn's {base.__qualname__} no longer has {missing}: see the subclass"


@pytest.mark.parametrize("package", ["uvicorn", "h11", "websockets", "httptools"])
def test_the_installed_foundations_are_the_pinned_versions(package: str) -> None:
    pinned = _pins().get(package)
    assert pinned is not None, f"{package} has no pin in constraints.txt"
    assert metadata.version(package) == pinned, (
        f"{package} {metadata.version(package)} is installed but constraints.txt pins {pinned}: "
        "run make setup, or test the new version and update the pin"
    )
