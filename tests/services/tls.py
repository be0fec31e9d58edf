"""Throw-away TLS certificates for the tests' servers: a private CA and one server certificate."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IssuedCertificates:
    ca: Path
    cert: Path
    key: Path


def issue_certificates(directory: Path, *, subject_alt_names: str = "IP:127.0.0.1") -> IssuedCertificates:
    """A private CA and a server certificate it signed for ``subject_alt_names`` (openssl CLI).

    Valid for two days. The key is world-readable on purpose: servers that drop
    privileges (slapd) must still read it, and it protects nothing.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    extensions = directory / "server.ext"
    extensions.write_text(f"subjectAltName={subject_alt_names}\nextendedKeyUsage=serverAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    new_key = ["-newkey", "rsa:2048", "-nodes"]
    openssl(
        "req",
        "-x509",
        *new_key,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=KVM-VDI test CA",
    )
    openssl("req", *new_key, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    signing = ["-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2"]
    openssl("x509", "-req", "-in", str(csr), *signing, "-out", str(cert), "-extfile", str(extensions))
    os.chmod(key, 0o644)
    return IssuedCertificates(ca=ca, cert=cert, key=key)
