"""Certificates near expiry: the dashboard's TLS certificate and any other PEM file named.

:func:`certificate_alerts` reads each file (PEM, first certificate) and returns an
alert for each that expires within ``warn_days`` (or already has, or cannot be
read). :class:`CertificateWatch` runs it at start and then periodically (a background
duty: with several replicas one of them checks, and each warning goes out once); other
parts of the dashboard (the SPICE certificate authority) pass their certificate
files to it at construction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from app.alerts.model import Alert
from app.i18n import gettext as _
from app.i18n import ngettext

log = logging.getLogger("kvmvdi.alerts")


def not_after(path: Path) -> datetime:
    """When the first certificate in the PEM file expires (aware, UTC)."""
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return certificate.not_valid_after_utc


def certificate_alerts(
    certificates: Mapping[str, Path], warn_days: int, now: datetime | None = None
) -> list[Alert]:
    """An alert for each certificate expiring within ``warn_days``, expired, or unreadable."""
    moment = now or datetime.now(UTC)
    alerts = []
    for name, path in certificates.items():
        try:
            expires = not_after(path)
        except (OSError, ValueError) as exc:
            alerts.append(
                Alert(
                    kind="certificate_expiry",
                    severity="critical",
                    subject=name,
                    title=_("Certificate {name} cannot be read").format(name=name),
                    text=_("The {name} certificate at {path} cannot be read: {error}").format(
                        name=name, path=path, error=exc
                    ),
                    details={"certificate": name, "path": str(path)},
                )
            )
            continue
        left = expires - moment
        if left > timedelta(days=warn_days):
            continue
        days = left.total_seconds() / 86400
        when = (
            _("expired")
            if days < 0
            else ngettext("expires in {days} day", "expires in {days} days", round(days)).format(
                days=round(days)
            )
        )
        alerts.append(
            Alert(
                kind="certificate_expiry",
                severity="critical" if days < 7 else "warning",
                subject=name,
                title=_("Certificate {name} {when}").format(name=name, when=when),
                text=_("The {name} certificate ({path}) {when}, on {expires} UTC. Renew it.").format(
                    name=name, path=path, when=when, expires=f"{expires:%Y-%m-%d %H:%M}"
                ),
                details={"certificate": name, "path": str(path), "not_after": expires.isoformat()},
            )
        )
    return alerts


class CertificateWatch:
    def __init__(
        self,
        certificates: Mapping[str, Path],
        submit: Callable[[Alert], None],
        *,
        warn_days: int,
        interval: float,
    ) -> None:
        self._certificates = dict(certificates)
        self._submit = submit
        self._warn_days = warn_days
        self._interval = interval

    async def check(self) -> list[Alert]:
        alerts = await asyncio.to_thread(certificate_alerts, self._certificates, self._warn_days)
        for alert in alerts:
            self._submit(alert)
        return alerts

    async def run(self) -> None:
        """Check now and every ``interval`` seconds, until cancelled (a background duty)."""
        if not self._certificates:
            return
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("checking certificates failed")
            await asyncio.sleep(self._interval)
