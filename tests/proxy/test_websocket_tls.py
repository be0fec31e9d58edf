"""The console websocket over TLS (wss://), as the HTML5 console uses it on an https dashboard."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from tests.dashboard import DashboardFactory
from tests.proxy.conftest import ECHO, TcpDisplay, make_world, pattern, stream_request


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_the_console_websocket_works_over_tls(
    dashboard_factory: DashboardFactory, display: TcpDisplay, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    world = await make_world(
        await dashboard_factory(server={"ssl_certfile": str(cert), "ssl_keyfile": str(key), "https": True})
    )
    assert world.ws_url().startswith("wss://")
    issued = await world.ticket(port=display.port)
    trust = ssl.create_default_context(cafile=str(cert))
    async with connect(
        world.ws_url(),
        ssl=trust,
        additional_headers={"Cookie": f"kvmvdi_console={issued.secret}"},
        origin=world.origin,  # type: ignore[arg-type]
        subprotocols=["binary"],  # type: ignore[list-item]
        max_size=None,
    ) as ws:
        await ws.send(ECHO + b"over tls")
        received = b""
        while len(received) < 12:
            message = await ws.recv()
            assert isinstance(message, bytes)
            received += message
        assert received == ECHO + b"over tls"
    async with connect(
        world.ws_url(),
        ssl=trust,
        additional_headers={"Cookie": f"kvmvdi_console={issued.secret}"},
        origin=world.origin,  # type: ignore[arg-type]
        subprotocols=["binary"],  # type: ignore[list-item]
        max_size=None,
    ) as ws:
        total = 16 * 1024 * 1024
        await ws.send(stream_request(total))
        offset = 0
        while offset < total:
            message = await ws.recv()
            assert isinstance(message, bytes)
            assert message == pattern(offset, len(message))
            offset += len(message)
