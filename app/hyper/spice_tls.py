"""Each hypervisor's SPICE server certificate, issued by the dashboard's CA over the SSH session.

qemu reads ``ca-cert.pem``, ``server-cert.pem`` and ``server-key.pem`` from
``spice_tls_x509_cert_dir`` in qemu.conf when a desktop starts. ``install.sh``
sets that to ``/etc/pki/libvirt-spice/current`` (a directory AppArmor's libvirt
profile lets qemu read), owned by the service user with the set-group-ID bit
and group ``kvm``, so files made there are readable by qemu and nobody else.

Issuing, as the service user: make a new generation directory, let openssl make
the key and a certificate request there (the key never leaves the hypervisor),
sign the request's public key, write the certificate and the CA's, then point
``current`` at the new generation with one rename, so a desktop starting at that
moment reads either the old files or the new ones, never a mix. Desktops keep the
certificate they started with until they restart; the old generation is kept
until the next issue.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from app.hyper.commands import CommandRunner
from app.hyper.records import HypervisorRecord
from app.tlsca import CertificateState, DashboardCA, ServerIdentity

log = logging.getLogger("kvmvdi.hyper.spice_tls")

CERT_DIR = "/etc/pki/libvirt-spice"
CURRENT = posixpath.join(CERT_DIR, "current")
_TIMEOUT = 60


class SpiceTls:
    """Issues and checks the SPICE certificates of hypervisors with the dashboard's CA."""

    def __init__(self, ca: DashboardCA) -> None:
        self.ca = ca

    @staticmethod
    def identity(record: HypervisorRecord) -> ServerIdentity:
        names = [record.console_address]
        if record.is_ssh and record.address and record.address not in names:
            names.append(record.address)
        return ServerIdentity(common_name=record.console_address, names=tuple(names))

    @staticmethod
    def applies_to(record: HypervisorRecord) -> bool:
        """libvirt's test driver has no SPICE server."""
        return record.transport != "test"

    async def installed(self, runner: CommandRunner) -> str | None:
        result = await runner.run(
            ["cat", posixpath.join(CURRENT, "server-cert.pem")], check=False, timeout=_TIMEOUT
        )
        return result.stdout if result.exit_status == 0 else None

    async def state(self, runner: CommandRunner, record: HypervisorRecord) -> CertificateState:
        return self.ca.check(await self.installed(runner), self.identity(record))

    async def ensure(self, runner: CommandRunner, record: HypervisorRecord) -> CertificateState:
        """The hypervisor's certificate: kept when it is ours, right and not due; else issued anew."""
        current = await self.state(runner, record)
        if not current.due():
            return current
        log.info("%s: issuing its SPICE certificate (%s)", record.name, current.reason)
        await self.issue(runner, record)
        return await self.state(runner, record)

    async def issue(self, runner: CommandRunner, record: HypervisorRecord) -> None:
        identity = self.identity(record)
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        generation = f"gen-{stamp}-{secrets.token_hex(3)}"
        directory = posixpath.join(CERT_DIR, generation)
        previous = await runner.run(["readlink", CURRENT], check=False, timeout=_TIMEOUT)
        await runner.run(["mkdir", "-m", "0750", directory], timeout=_TIMEOUT)
        key = posixpath.join(directory, "server-key.pem")
        request = await runner.run(
            [
                "openssl", "req", "-new", "-batch", "-nodes",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", key, "-subj", "/CN=kvm-vdi-spice",
            ],
            timeout=_TIMEOUT,
        )  # fmt: skip
        certificate = self.ca.sign(request.stdout.encode(), identity)
        for name, content in (("server-cert.pem", certificate), ("ca-cert.pem", self.ca.pem)):
            await _write(runner, posixpath.join(directory, name), content)
        # qemu runs in group kvm, which the directory's set-group-ID bit gives every file here.
        files = [posixpath.join(directory, n) for n in ("server-key.pem", "server-cert.pem", "ca-cert.pem")]
        await runner.run(["chmod", "0640", *files], timeout=_TIMEOUT)
        link = posixpath.join(CERT_DIR, "current.new")
        await runner.run(["ln", "-sfn", generation, link], timeout=_TIMEOUT)
        await runner.run(["mv", "-T", link, CURRENT], timeout=_TIMEOUT)
        keep = {generation, posixpath.basename(previous.stdout.strip())}
        await _remove_generations(runner, keep)


async def _write(runner: CommandRunner, path: str, content: str) -> None:
    await runner.run(["tee", path], input=content.encode(), timeout=_TIMEOUT)


async def _remove_generations(runner: CommandRunner, keep: Sequence[str] | set[str]) -> None:
    listed = await runner.run(
        ["find", CERT_DIR, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-name", "gen-*"],
        check=False,
        timeout=_TIMEOUT,
    )
    stale = [p for p in listed.stdout.split() if posixpath.basename(p) not in keep]
    if stale:
        await runner.run(["rm", "-rf", "--", *stale], check=False, timeout=_TIMEOUT)
