"""Where alerts go: e-mail over SMTP and a JSON webhook signed with HMAC-SHA256.

Both send with the standard library in a worker thread (``asyncio.to_thread``),
never on the event loop, each with its own timeout. A webhook request carries
``X-KVMVDI-Timestamp`` (Unix seconds) and ``X-KVMVDI-Signature: sha256=<hex>``,
the HMAC-SHA256 with the shared secret of ``<timestamp>.<body>``: the receiver
recomputes it, compares in constant time and refuses old timestamps (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from datetime import UTC
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from app.alerts.model import Alert
from app.i18n import gettext as _
from app.i18n import ngettext
from app.settings import AlertSettings

SIGNATURE_HEADER = "X-KVMVDI-Signature"
TIMESTAMP_HEADER = "X-KVMVDI-Timestamp"


class DeliveryError(Exception):
    """A channel could not deliver (the message says why, without secrets)."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def email_message(alert: Alert, *, sender: str, recipients: list[str], dashboard: str) -> EmailMessage:
    message = EmailMessage()
    # Names in a title come from admins' input: one line, whatever they typed.
    message["Subject"] = " ".join(f"[KVM-VDI] {alert.title}".split())
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(alert.at.replace(tzinfo=UTC))
    message["Message-ID"] = make_msgid(domain="kvm-vdi")
    message["X-KVMVDI-Alert"] = alert.kind
    lines = [alert.text, ""]
    if alert.suppressed:
        lines.append(
            ngettext(
                "{count} more alert like this was held back by the rate limit.",
                "{count} more alerts like this were held back by the rate limit.",
                alert.suppressed,
            ).format(count=alert.suppressed)
        )
    lines += [f"{key}: {value}" for key, value in sorted(alert.details.items())]
    lines += [
        "",
        _("Severity: {severity}").format(severity=alert.severity),
        _("At: {at} UTC").format(at=alert.at.isoformat()),
    ]
    if dashboard:
        lines.append(_("Dashboard: {url}").format(url=dashboard))
    message.set_content("\n".join(lines) + "\n")
    return message


class _BlockingChannel:
    """Sends with blocking standard-library calls, in a worker thread."""

    name = ""

    def __init__(self, settings: AlertSettings, dashboard: str = "") -> None:
        self._settings = settings
        self._dashboard = dashboard

    async def send(self, alert: Alert) -> None:
        await asyncio.to_thread(self._send, alert)

    def _send(self, alert: Alert) -> None:
        raise NotImplementedError


class EmailChannel(_BlockingChannel):
    name = "email"

    def _send(self, alert: Alert) -> None:
        s = self._settings
        message = email_message(alert, sender=s.email_from, recipients=s.email_to, dashboard=self._dashboard)
        try:
            smtp: smtplib.SMTP
            if s.smtp_security == "tls":
                smtp = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout)
            with smtp:
                if s.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_username and s.smtp_password is not None:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {s.smtp_host}:{s.smtp_port}: {type(exc).__name__}: {exc}") from exc


class WebhookChannel(_BlockingChannel):
    name = "webhook"

    def _send(self, alert: Alert) -> None:
        s = self._settings
        body = json.dumps({**alert.as_json(), "dashboard": self._dashboard}, default=str).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "kvm-vdi-alerts",
            TIMESTAMP_HEADER: timestamp,
        }
        if s.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = signature(
                s.webhook_secret.get_secret_value().encode(), timestamp, body
            )
        url = s.webhook_url.get_secret_value() if s.webhook_url is not None else ""
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=s.timeout) as response:  # noqa: S310
                response.read(65536)
        except urllib.error.HTTPError as exc:
            raise DeliveryError(_("webhook answered HTTP {code}").format(code=exc.code)) from exc
        except OSError as exc:
            raise DeliveryError(f"webhook: {type(exc).__name__}: {exc}") from exc
