"""The dashboard's own small certificate authority, for SPICE over TLS.

Its key and certificate live in ``data_dir/ca`` (``ca.key``, ``ca.pem``, both
0600; the directory 0700). It signs one certificate per hypervisor, for the
SPICE server of every desktop there: the hypervisor makes its key and sends a
certificate request (the key never leaves it), the CA signs only the request's
public key, with a subject and names it chooses itself. Clients trust the CA
(the dashboard's console bridge, remote-viewer through the ``.vv`` file, the
thin client).

Everything here is blocking (files, key generation): call it off the event loop.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.i18n import gettext as _

CA_VALIDITY = timedelta(days=3650)
# Server certificates: a little over a year; renewed once less than RENEW_BEFORE is left.
SERVER_VALIDITY = timedelta(days=397)
RENEW_BEFORE = timedelta(days=60)


class CertificateError(Exception):
    """A certificate request or certificate that this CA will not accept."""


@dataclass(frozen=True)
class ServerIdentity:
    """What a hypervisor's SPICE certificate must say: its subject CN and its names."""

    common_name: str
    names: tuple[str, ...]

    @property
    def subject(self) -> str:
        """The subject as remote-viewer's ``host-subject`` spells it."""
        return f"CN={self.common_name}"


@dataclass(frozen=True)
class CertificateState:
    """What an installed certificate is worth to this CA."""

    valid: bool
    reason: str
    not_after: datetime | None = None

    def due(self, now: datetime | None = None) -> bool:
        """Missing, wrong or close enough to its end to be issued again."""
        if not self.valid or self.not_after is None:
            return True
        return self.not_after - (now or datetime.now(UTC)) < RENEW_BEFORE


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name)


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(temporary, path)


class DashboardCA:
    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self.certificate = certificate
        self.pem = certificate.public_bytes(serialization.Encoding.PEM).decode()

    @staticmethod
    def certificate_file(directory: Path) -> Path:
        return directory / "ca.pem"

    @classmethod
    def load_or_create(cls, directory: Path) -> DashboardCA:
        """The CA in ``directory``, made on first use (key and certificate 0600)."""
        key_path, cert_path = directory / "ca.key", cls.certificate_file(directory)
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CertificateError(_("{key_path} is not an EC key").format(key_path=key_path))
            return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "KVM-VDI"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"KVM-VDI console CA {secrets.token_hex(4)}"),
            ]
        )
        now = datetime.now(UTC)
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(key_path, pem_key)
        _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        return cls(key, certificate)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (hex): every replica of a cluster must show the same one."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def sign(
        self, request_pem: bytes, identity: ServerIdentity, *, validity: timedelta = SERVER_VALIDITY
    ) -> str:
        """A server certificate for the request's public key, saying ``identity`` (nothing else
        from the request is taken)."""
        try:
            request = x509.load_pem_x509_csr(request_pem)
        except ValueError as exc:
            raise CertificateError(_("not a certificate request: {exc}").format(exc=exc)) from None
        if not request.is_signature_valid:
            raise CertificateError(_("the certificate request's signature is not valid"))
        public = request.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise CertificateError(_("the certificate request's key is not an EC key"))
        now = datetime.now(UTC)
        ca_public = self._key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + validity, self.not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in identity.names]), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def check(self, certificate_pem: str | None, identity: ServerIdentity) -> CertificateState:
        """Whether an installed server certificate is ours, for ``identity``, and still valid."""
        if not certificate_pem:
            return CertificateState(False, "no SPICE certificate installed")
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        except ValueError:
            return CertificateState(False, "the installed SPICE certificate cannot be read")
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return CertificateState(False, "the installed SPICE certificate is not from this dashboard's CA")
        not_after = certificate.not_valid_after_utc
        if not_after <= datetime.now(UTC):
            return CertificateState(
                False, f"the SPICE certificate expired on {not_after:%Y-%m-%d}", not_after
            )
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [str(n.value) for n in names] != [identity.common_name]:
            return CertificateState(False, "the SPICE certificate names another host", not_after)
        try:
            sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return CertificateState(False, "the SPICE certificate has no host names", not_after)
        if any(_general_name(n) not in sans for n in identity.names):
            return CertificateState(False, "the SPICE certificate lacks a current host name", not_after)
        return CertificateState(True, f"valid until {not_after:%Y-%m-%d}", not_after)

    def client_context(self) -> ssl.SSLContext:
        """TLS client settings trusting this CA only, host names checked."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.pem)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
