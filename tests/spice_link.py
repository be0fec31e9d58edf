"""A SPICE client's log-in, far enough to learn whether a password is accepted.

The link handshake of the SPICE protocol (spice-protocol ``protocol.h``):

1. client: ``SpiceLinkHeader`` (magic ``REDQ``, version 2.2, size) + ``SpiceLinkMess``
   for the main channel, announcing AUTH_SELECTION, AUTH_SPICE and MINI_HEADER;
2. server: ``SpiceLinkHeader`` + ``SpiceLinkReply``: error code, its 1024-bit RSA
   public key (162 bytes of DER SubjectPublicKeyInfo) and its capabilities;
3. client: the chosen mechanism (``SpiceLinkAuthMechanism``: 1 = SPICE ticket) when
   the server offers auth selection, then the password plus a NUL byte, encrypted
   with RSA-OAEP (SHA-1) under the server's key: 128 bytes;
4. server: a 32-bit link result, 0 = OK, 7 = permission denied.
"""

from __future__ import annotations

import socket
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MAGIC = b"REDQ"
VERSION = (2, 2)
CHANNEL_MAIN = 1
CAP_AUTH_SELECTION = 0
CAP_AUTH_SPICE = 1
CAP_MINI_HEADER = 3
AUTH_MECHANISM_SPICE = 1
PUBKEY_BYTES = 162

LINK_OK = 0
LINK_PERMISSION_DENIED = 7


class SpiceProtocolError(Exception):
    """The peer did not speak SPICE as expected."""


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise SpiceProtocolError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def spice_login(host: str, port: int, password: str, *, timeout: float = 10) -> int:
    """Log in to the main channel with ``password``; returns the server's link result (0 = OK)."""
    caps = (1 << CAP_AUTH_SELECTION) | (1 << CAP_AUTH_SPICE) | (1 << CAP_MINI_HEADER)
    # connection_id, channel_type, channel_id, num_common_caps, num_channel_caps, caps_offset
    mess = struct.pack("<IBBIII", 0, CHANNEL_MAIN, 0, 1, 0, 18) + struct.pack("<I", caps)
    header = MAGIC + struct.pack("<III", *VERSION, len(mess))
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(header + mess)
        magic, major, _minor, size = struct.unpack("<4sIII", _recv_exact(conn, 16))
        if magic != MAGIC or major != VERSION[0]:
            raise SpiceProtocolError(f"{host}:{port} answered {magic!r} version {major}")
        reply = _recv_exact(conn, size)
        (error,) = struct.unpack_from("<I", reply, 0)
        if error != LINK_OK:
            return int(error)
        public_der = reply[4 : 4 + PUBKEY_BYTES]
        num_common, _num_channel, caps_offset = struct.unpack_from("<III", reply, 4 + PUBKEY_BYTES)
        common = struct.unpack_from(f"<{num_common}I", reply, caps_offset) if num_common else ()
        server_caps = common[0] if common else 0
        if server_caps & (1 << CAP_AUTH_SELECTION):
            conn.sendall(struct.pack("<I", AUTH_MECHANISM_SPICE))
        key = serialization.load_der_public_key(public_der)
        if not isinstance(key, rsa.RSAPublicKey):
            raise SpiceProtocolError("the server's ticket key is not RSA")
        ticket = key.encrypt(
            password.encode() + b"\0",
            padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303
        )
        conn.sendall(ticket)
        (result,) = struct.unpack("<I", _recv_exact(conn, 4))
        return int(result)
