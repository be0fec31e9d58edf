"""The dashboard's websocket protocol for uvicorn, tuned for console traffic.

It is uvicorn's websockets-sansio implementation (websockets' ``ServerProtocol``
does the handshake, parsing, unmasking, pings and closing) with these changes:

- console websockets never negotiate permessage-deflate: SPICE's display data
  is already compressed, and deflate would cost CPU and latency for nothing;
- a binary message is written as a frame header plus the payload object
  itself (``transport.writelines``), so the proxy's 256 KiB chunks reach the
  socket without being copied into a new frame buffer. Flow control is
  unchanged: ``send`` waits while the transport is above its high-water mark;
- the ASGI extension ``kvmvdi.websocket.direct`` lets the console bridge move
  binary messages from socket callbacks, without a queue and a task switch per
  message (what makes an interactive console feel immediate):
  ``send_nowait(data) -> bool`` writes a message at once when the socket is open
  and below its high-water mark (False: use ``send``); ``set_receiver(fn)`` hands
  every complete binary message to ``fn`` instead of the ``receive`` queue; and
  ``pause_reading()`` / ``resume_reading()`` let the receiver apply back-pressure.
  Everything else (text, fragments, close, disconnect) still goes through ASGI.

Run the dashboard with ``uvicorn.run(app, ws=DashboardWebSocketProtocol)``. The
console endpoint is plain ASGI and also works on other servers, only slower.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

from app.proxy.paths import CONSOLE_WEBSOCKET_PREFIX

_FIN_BINARY = 0x82
DIRECT_EXTENSION = "kvmvdi.websocket.direct"

BinaryReceiver = Callable[[bytes], None]


def binary_frame_header(length: int) -> bytes:
    """RFC 6455 section 5.2 header of an unmasked, final binary frame (server to client)."""
    if length < 126:
        return struct.pack("!BB", _FIN_BINARY, length)
    if length < 65536:
        return struct.pack("!BBH", _FIN_BINARY, 126, length)
    return struct.pack("!BBQ", _FIN_BINARY, 127, length)


class DashboardWebSocketProtocol(WebSocketsSansIOProtocol):
    _receiver: BinaryReceiver | None = None

    def handle_connect(self, event: Request) -> None:
        if event.path.startswith(CONSOLE_WEBSOCKET_PREFIX):
            self.conn.available_extensions = []
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        if scope is not None:
            # The ASGI task is created but has not run yet: it sees the extension.
            scope["extensions"][DIRECT_EXTENSION] = {
                "send_nowait": self.send_binary_nowait,
                "set_receiver": self.set_binary_receiver,
                "pause_reading": self.transport.pause_reading,
                "resume_reading": self.transport.resume_reading,
            }

    def _can_write_binary(self) -> bool:
        conn = self.conn
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.initial_response is None
            and conn.state is State.OPEN
            and not conn.extensions
            and not conn.expect_continuation_frame
        )

    def send_binary_nowait(self, data: bytes) -> bool:
        """Write one binary message now if nothing has to wait; False: use ``send``."""
        if not self.writable.is_set() or not self._can_write_binary():
            return False
        self.transport.writelines((binary_frame_header(len(data)), data))
        return True

    def set_binary_receiver(self, receiver: BinaryReceiver | None) -> None:
        self._receiver = receiver

    def handle_bytes(self, event: Frame) -> None:
        receiver = self._receiver
        if receiver is not None and event.fin and not self.close_sent:
            receiver(bytes(event.data))
            return
        super().handle_bytes(event)

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
        if not self._can_write_binary():
            # Let websockets raise or encode: not open any more, or an extension to apply.
            await super().send(message)
            return
        self.transport.writelines((binary_frame_header(len(data)), data))
