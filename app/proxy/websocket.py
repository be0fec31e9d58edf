"""One SPICE channel carried by a browser websocket (the endpoint is :mod:`app.views.console_socket`).

The channel moves bytes both ways with bounded buffers: a chunk read from the
display is sent before more is read past ``console.buffer_limit``, and a message
from the browser is written only when the display's socket has drained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Receive, Send

from app.proxy import sessions as reasons
from app.proxy.pump import SocketEnd
from app.proxy.sessions import CloseReason

log = logging.getLogger("kvmvdi.proxy.websocket")


class WebSocketChannel:
    """One SPICE channel carried by a browser websocket."""

    def __init__(
        self,
        send: Send,
        receive: Receive,
        upstream: SocketEnd,
        *,
        queue_limit: int,
        explain_hangup: Callable[[], Awaitable[CloseReason]],
        direct: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        # The dashboard's websocket protocol moves messages from socket callbacks (wsprotocol.py).
        self._direct = direct
        self._send_nowait: Callable[[bytes], bool] | None = direct["send_nowait"] if direct else None
        self._sending = False
        # When the display hangs up, why (the VM stopped?): found out by the console session.
        self._explain_hangup = explain_hangup
        self._receive = receive
        self.upstream = upstream
        self._limit = queue_limit
        self._clock = clock
        self.bytes_to_client = 0
        self.bytes_to_vm = 0
        self.last_activity = clock()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._vm_closed = False
        self._browser_left = False
        self._reason: CloseReason | None = None
        self.display_hung_up = False

    @property
    def queued(self) -> int:
        """Bytes read from the display and not yet handed to the websocket."""
        return self._queued

    def buffered(self) -> int:
        """Bytes this channel holds in user space: its queue and the display socket's write buffer."""
        return self._queued + self.upstream.buffered()

    def close(self, reason: CloseReason) -> None:
        """End the channel now: the browser gets a close frame with ``reason``."""
        if self._reason is None:
            self._reason = reason
        self.upstream.abort()
        self._chunks.clear()
        self._queued = 0
        self._wake()

    async def run(self) -> None:
        direct = self._direct
        if direct is not None:
            direct["set_receiver"](self._from_browser)
            self.upstream.attach(
                self._from_vm, on_writable=self._upstream_writable, on_closed=self._upstream_closed
            )
        else:
            self.upstream.attach(self._from_vm, on_closed=self._upstream_closed)
        sender = asyncio.get_running_loop().create_task(self._send_loop())
        try:
            await self._receive_loop()
        finally:
            self._browser_left = True
            if direct is not None:
                direct["set_receiver"](None)
                # Reading may be paused for the display's sake: let the closing handshake through.
                direct["resume_reading"]()
            self.upstream.abort()
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    # -- display to browser ---------------------------------------------------------------

    def _from_vm(self, data: bytes) -> None:
        # Straight to the browser when nothing is queued or in flight and its socket takes it.
        if (
            not self._chunks
            and not self._sending
            and self._send_nowait is not None
            and self._send_nowait(data)
        ):
            self.bytes_to_client += len(data)
            self.last_activity = self._clock()
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued >= self._limit:
            self.upstream.set_reading(False)
        self._wake()

    def _upstream_closed(self, exc: Exception | None) -> None:
        if self._reason is None and not self._browser_left:
            self.display_hung_up = True
        self._vm_closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        send = self._send
        chunks = self._chunks
        try:
            while True:
                if not chunks:
                    if self._vm_closed or self._reason is not None:
                        break
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    continue
                data = chunks.popleft()
                self._queued -= len(data)
                if self._queued <= self._limit // 2 and not self.upstream.reading:
                    self.upstream.set_reading(True)
                self._sending = True
                await send({"type": "websocket.send", "bytes": data})
                self._sending = False
                self.bytes_to_client += len(data)
                self.last_activity = self._clock()
            reason = reasons.VM_CLOSED
            if self._reason is None and self.display_hung_up:
                # So that the page can say what happened (the desktop stopped?), within a bound.
                reason = await self._explain_hangup()
            reason = self._reason or reason
            await send({"type": "websocket.close", "code": reason.ws_code, "reason": reason.message})
        except (OSError, RuntimeError):
            # The browser went away (uvicorn's ClientDisconnected is an OSError): the
            # receive loop sees the disconnect and ends the channel.
            return

    # -- browser to display ---------------------------------------------------------------

    def _from_browser(self, data: bytes) -> None:
        """A binary message, straight from the websocket's socket callback."""
        upstream = self.upstream
        if upstream.closed:
            return
        upstream.write(data)
        self.bytes_to_vm += len(data)
        self.last_activity = self._clock()
        if not upstream.writable:
            self._upstream_writable(False)

    def _upstream_writable(self, writable: bool) -> None:
        # The display's socket is full (or drained): stop (or resume) reading the browser's.
        assert self._direct is not None
        self._direct["resume_reading" if writable else "pause_reading"]()

    async def _receive_loop(self) -> None:
        upstream = self.upstream
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                # SPICE is binary; a text message is a confused client.
                self.close(reasons.CloseReason("protocol_error", 1003, "Binary messages only."))
                continue
            if not upstream.writable:
                await upstream.drained()
            if upstream.closed:
                continue
            upstream.write(data)
            self.bytes_to_vm += len(data)
            self.last_activity = self._clock()
