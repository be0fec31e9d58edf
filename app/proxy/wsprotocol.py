"""The dashboard's websocket protocol for uvicorn, tuned for console traffic.

It is uvicorn's websockets-sansio implementation (websockets' ``ServerProtocol``
does the handshake, parsing, masking, pings and closing) with two changes:

- console websockets never negotiate permessage-deflate: SPICE's display data
  is already compressed, and deflate would cost CPU and latency for nothing;
- a binary message is written as a frame header plus the payload object
  itself (``transport.writelines``), so the proxy's 256 KiB chunks reach the
  socket without being copied into a new frame buffer. Flow control is
  unchanged: ``send`` waits while the transport is above its high-water mark.

Run the dashboard with ``uvicorn.run(app, ws=DashboardWebSocketProtocol)``. The
console endpoint is plain ASGI and also works on other servers, only slower.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from app.proxy.paths import CONSOLE_WEBSOCKET_PREFIX

_FIN_BINARY = 0x82


def binary_frame_header(length: int) -> bytes:
    """RFC 6455 section 5.2 header of an unmasked, final binary frame (server to client)."""
    if length < 126:
        return struct.pack("!BB", _FIN_BINARY, length)
    if length < 65536:
        return struct.pack("!BBH", _FIN_BINARY, 126, length)
    return struct.pack("!BBQ", _FIN_BINARY, 127, length)


class DashboardWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Request) -> None:
        if event.path.startswith(CONSOLE_WEBSOCKET_PREFIX):
            self.conn.available_extensions = []
        super().handle_connect(event)

    async def send(self, message: Any) -> None:
        data = message.get("bytes") if message["type"] == "websocket.send" else None
        if (
            data is None
            or not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
        ):
            await super().send(message)
            return
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        conn = self.conn
        if conn.state is not State.OPEN or conn.extensions or conn.expect_continuation_frame:
            # Let websockets raise or encode: not open any more, or an extension to apply.
            await super().send(message)
            return
        self.transport.writelines((binary_frame_header(len(data)), data))
