"""A raw HTTP/1.1 client for requests no polite client sends: huge or endless bodies,
heads and bodies trickled a byte at a time.

It keeps sending while it reads, and stops sending as soon as the answer arrives
(or the server closes), so a server that refuses early is seen refusing early.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field


@dataclass
class RawAnswer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    sent: int = 0  # body bytes the client managed to send
    closed: bool = False  # the server closed the connection after (or instead of) answering


def head(method: str, path: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def repeat(chunk: bytes, times: int, pause: float = 0.0) -> AsyncIterator[bytes]:
    for _ in range(times):
        yield chunk
        if pause:
            await asyncio.sleep(pause)  # pacing: a slow client's rhythm


async def _read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    try:
        raw_head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return RawAnswer(status=None, closed=True)
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    closed = False
    try:
        async with asyncio.timeout(5):
            closed = await reader.read(1) == b""
    except ConnectionError:
        closed = True  # reset: the server closed with the rest of the body unread
    except TimeoutError:
        pass
    return RawAnswer(status=status, headers=headers, body=body, closed=closed)


async def request(
    port: int,
    request_head: bytes,
    body: AsyncIterator[bytes] | None = None,
    *,
    chunked: bool = False,
    timeout: float = 60.0,
) -> RawAnswer:
    """Send ``request_head`` then ``body`` (as chunks when ``chunked``) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def send() -> None:
        nonlocal sent
        try:
            writer.write(request_head)
            await writer.drain()
            if body is None:
                return
            async for chunk in body:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                await writer.drain()
                sent += len(chunk)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except ConnectionError:
            pass

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(timeout):
            answer = await _read_answer(reader)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    answer.sent = sent
    return answer
