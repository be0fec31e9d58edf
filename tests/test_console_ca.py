"""The dashboard's console CA: made once, kept private on disk, and the judge of each hypervisor's
SPICE certificate, which is issued again when it is missing, not from this CA, names another host,
has expired or is within RENEW_BEFORE of its end."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.tlsca import RENEW_BEFORE, DashboardCA, ServerIdentity

HYPERVISOR = ServerIdentity(common_name="10.0.0.5", names=("10.0.0.5", "hv1.example.org"))


def request_pem() -> bytes:
    """A certificate request as openssl makes it on the hypervisor (the key stays there)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever the request says")])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_made_once_kept_private_and_read_back_the_same(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    ca = DashboardCA.load_or_create(directory)
    assert mode(directory) == 0o700
    assert mode(directory / "ca.key") == 0o600 and mode(directory / "ca.pem") == 0o600
    again = DashboardCA.load_or_create(directory)
    assert again.fingerprint == ca.fingerprint
    # Another installation's CA is another CA.
    assert DashboardCA.load_or_create(tmp_path / "other").fingerprint != ca.fingerprint


def test_a_certificate_of_this_ca_for_the_hypervisor_is_kept_until_it_nears_its_end(tmp_path: Path) -> None:
    ca = DashboardCA.load_or_create(tmp_path / "ca")
    issued = ca.sign(request_pem(), HYPERVISOR)
    state = ca.check(issued, HYPERVISOR)
    assert state.valid and not state.due()
    assert state.not_after is not None
    # The identity comes from the hypervisor record, never from the request.
    certificate = x509.load_pem_x509_certificate(issued.encode())
    assert certificate.subject.rfc4514_string() == HYPERVISOR.subject
    # Within RENEW_BEFORE of its end it is issued again, still valid meanwhile.
    assert state.due(now=state.not_after - RENEW_BEFORE + timedelta(hours=1))
    assert not state.due(now=state.not_after - RENEW_BEFORE - timedelta(hours=1))
    short = ca.check(ca.sign(request_pem(), HYPERVISOR, validity=timedelta(days=30)), HYPERVISOR)
    assert short.valid and short.due()


def test_a_missing_foreign_misnamed_or_expired_certificate_is_due(tmp_path: Path) -> None:
    ca = DashboardCA.load_or_create(tmp_path / "ca")
    foreign = DashboardCA.load_or_create(tmp_path / "foreign")
    renamed = ServerIdentity(common_name="10.0.0.9", names=("10.0.0.9",))
    readdressed = ServerIdentity(common_name="10.0.0.5", names=("10.0.0.5", "hv1.example.org", "10.1.0.5"))
    cases = {
        "no SPICE certificate installed": ca.check(None, HYPERVISOR),
        "cannot be read": ca.check("-----BEGIN CERTIFICATE-----\nnot one\n", HYPERVISOR),
        "not from this dashboard's CA": ca.check(foreign.sign(request_pem(), HYPERVISOR), HYPERVISOR),
        "names another host": ca.check(ca.sign(request_pem(), HYPERVISOR), renamed),
        "lacks a current host name": ca.check(ca.sign(request_pem(), HYPERVISOR), readdressed),
        "expired on": ca.check(
            ca.sign(request_pem(), HYPERVISOR, validity=timedelta(seconds=-1)), HYPERVISOR
        ),
    }
    for reason, state in cases.items():
        assert not state.valid and state.due(), (reason, state)
        assert reason in state.reason, (reason, state.reason)
    expired = cases["expired on"]
    assert expired.not_after is not None and expired.not_after <= datetime.now(UTC)
