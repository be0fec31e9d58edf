"""The far ends of the proxy benchmark, each run as its own process.

``display PORT``: stands in for a VM's SPICE display (protocol-independent). The first
byte of a connection picks its behaviour: ``S`` streams bytes as fast as the reader
takes them, ``E`` echoes everything after it, anything else waits for the close.
``display PORT --tls-cert C --tls-key K``: the same over TLS, as qemu's TLS port serves.

``relay LISTEN_PORT TARGET_PORT [--loop uvloop|asyncio] [--read-size N]``: the plain
asyncio TCP relay the console bridge is compared with (streams API, read/write/drain).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import ssl
import sys

BLOCK = memoryview(b"\x5a" * (1 << 20))


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve_display(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        command = await loop.sock_recv(conn, 1)
        if command == b"S":
            while True:
                await loop.sock_sendall(conn, BLOCK)
        elif command == b"E":
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)
        else:
            while await loop.sock_recv(conn, 65536):
                pass
    except OSError:
        pass
    finally:
        conn.close()


async def display(port: int) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()
    print("ready", flush=True)
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(_serve_display(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read_size: int) -> None:
    try:
        while data := await reader.read(read_size):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def relay(listen_port: int, target_port: int, read_size: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, target_writer, read_size), _pipe(target_reader, writer, read_size))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def _serve_tls_display(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        command = await reader.read(1)
        if command == b"S":
            # Until the bridge hangs up: a TLS transport being shut down does not fail drain()
            # at once, and writing on would spin this one loop while the next handshake waits.
            while not writer.is_closing() and not reader.at_eof():
                writer.write(BLOCK)
                await writer.drain()
        elif command == b"E":
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        else:
            while await reader.read(65536):
                pass
    except OSError:
        pass
    finally:
        writer.close()


async def tls_display(port: int, cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(_serve_tls_display, "127.0.0.1", port, ssl=context, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.proxy_peers")
    sub = parser.add_subparsers(dest="role", required=True)
    d = sub.add_parser("display")
    d.add_argument("port", type=int)
    d.add_argument("--tls-cert")
    d.add_argument("--tls-key")
    r = sub.add_parser("relay")
    r.add_argument("listen_port", type=int)
    r.add_argument("target_port", type=int)
    r.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    r.add_argument("--read-size", type=int, default=256 * 1024)
    args = parser.parse_args(argv)
    _raise_fd_limit()
    if args.role == "display":
        import uvloop

        if args.tls_cert:
            uvloop.run(tls_display(args.port, args.tls_cert, args.tls_key))
        else:
            uvloop.run(display(args.port))
    elif args.loop == "uvloop":
        import uvloop

        uvloop.run(relay(args.listen_port, args.target_port, args.read_size))
    else:
        asyncio.run(relay(args.listen_port, args.target_port, args.read_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
