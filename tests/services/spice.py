"""The first step of a SPICE connection, to prove that a port is a live SPICE server."""

from __future__ import annotations

import socket
import struct

SPICE_MAGIC = b"REDQ"
CHANNEL_MAIN = 1
# common capabilities: AUTH_SELECTION (0), AUTH_SPICE (1), MINI_HEADER (3)
COMMON_CAPS = (1 << 0) | (1 << 1) | (1 << 3)


def spice_link(host: str, port: int, *, timeout: float = 5) -> int:
    """Send a SpiceLinkMess for the main channel; return the server's link error code (0 = OK).

    Raises ``ValueError`` if the peer does not answer like a SPICE server.
    """
    # SpiceLinkMess: connection_id, channel_type, channel_id, num_common_caps,
    # num_channel_caps, caps_offset (18 = size of these fields), then the caps.
    body = struct.pack("<IBBIII", 0, CHANNEL_MAIN, 0, 1, 0, 18) + struct.pack("<I", COMMON_CAPS)
    header = SPICE_MAGIC + struct.pack("<III", 2, 2, len(body))
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(header + body)
        reply = b""
        while len(reply) < 20:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    if len(reply) < 20 or reply[:4] != SPICE_MAGIC:
        raise ValueError(f"{host}:{port} is not a SPICE server (answered {reply[:20]!r})")
    (error,) = struct.unpack("<I", reply[16:20])
    return int(error)
