"""Alerts by e-mail (a real SMTP server, aiosmtpd) and by signed webhook (a real HTTP receiver that
checks the HMAC), rate-limited per alert, delivered off the producers' path with retries.
The hypervisor down-and-back alert with a real hypervisor is in tests/vms/test_alerts_hypervisor.py."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app import db as database
from app.alerts.certificates import certificate_alerts
from app.db.schema import audit_log
from app.i18n import set_default_language
from app.i18n.catalogues import SOURCE_LANGUAGE
from app.vms.errors import VmError
from app.vms.operations import OperationContext
from tests.broker.records import CLIENT_PASSWORD, add_client, add_pool
from tests.dashboard import DashboardFactory, RunningDashboard
from tests.services.smtp import SmtpServer
from tests.test_admin_tokens import bearer, make_token
from tests.waiting import eventually
from tests.webhook_receiver import WEBHOOK_SECRET, WebhookReceiver

SECRET = WEBHOOK_SECRET
API = "/api/v1/admin"


def alert_settings(smtp: SmtpServer | None, hooks: WebhookReceiver | None, **extra: Any) -> dict[str, Any]:
    """Alert settings sending to a recipient of this test's own (the SMTP server is shared)."""
    settings: dict[str, Any] = {"rate_limit": 0, "retry_initial": 0.05, "retry_max": 0.2, **extra}
    if smtp is not None:
        settings |= {"email_to": [f"ops-{uuid.uuid4().hex[:8]}@example.org"], "smtp_port": smtp.port}
    if hooks is not None:
        settings |= {"webhook_url": hooks.url, "webhook_secret": SECRET}
    return settings


def mails_to(smtp: SmtpServer, running: RunningDashboard) -> list[EmailMessage]:
    recipient = running.settings.alerts.email_to[0]
    return [message for message in smtp.messages() if message["X-RcptTo"] == recipient]


async def fail_operation(
    running: RunningDashboard, kind: str = "probe", error: str = "the disk is full"
) -> int:
    operations = running.services.vms.operations

    async def fails(context: OperationContext) -> str:
        raise VmError(error)

    op_id = await operations.start(kind, fails, created_by="admin")
    assert (await operations.wait(op_id)).state == "failed"
    return op_id


async def test_a_failed_operation_is_mailed_and_posted_with_a_valid_signature(
    dashboard_factory: DashboardFactory, smtp_server: SmtpServer, receiver: WebhookReceiver
) -> None:
    running = await dashboard_factory(alerts=alert_settings(smtp_server, receiver))
    op_id = await fail_operation(running)

    (mail,) = await eventually(lambda: mails_to(smtp_server, running), "the alert e-mail")
    assert mail["Subject"] == f"[KVM-VDI] Operation probe #{op_id} failed"
    assert mail["X-KVMVDI-Alert"] == "operation_failed" and mail["From"] == "kvm-vdi@localhost"
    assert "the disk is full" in mail.get_content()
    (posted,) = await eventually(lambda: receiver.received, "the webhook")
    assert posted.signature_ok, posted.headers
    assert posted.body["kind"] == "operation_failed" and posted.body["subject"] == "probe"
    assert posted.body["details"]["operation_id"] == op_id and posted.body["severity"] == "warning"


async def test_alerts_are_written_in_the_servers_default_language(
    dashboard_factory: DashboardFactory, smtp_server: SmtpServer, receiver: WebhookReceiver
) -> None:
    """Nobody's browser asks for an alert: it goes out in ``[i18n] default_language``."""
    try:
        running = await dashboard_factory(
            alerts=alert_settings(smtp_server, receiver), i18n={"default_language": "lt"}
        )
        op_id = await fail_operation(running)
        (mail,) = await eventually(lambda: mails_to(smtp_server, running), "the alert e-mail")
        (posted,) = await eventually(lambda: receiver.received, "the webhook")
    finally:
        # One process serves every dashboard of the suite: the others speak English.
        set_default_language(SOURCE_LANGUAGE)
    assert mail["Subject"] == f"[KVM-VDI] Operacija probe #{op_id} nepavyko"
    body = mail.get_content()
    assert f"Operacija probe #{op_id} nepavyko po " in body and "Svarba: warning" in body, body
    assert posted.body["title"] == f"Operacija probe #{op_id} nepavyko"
    # What programs read stays as it is.
    assert posted.body["kind"] == "operation_failed" and mail["X-KVMVDI-Alert"] == "operation_failed"


async def test_a_forged_or_replayed_signature_fails_the_receivers_check(receiver: WebhookReceiver) -> None:
    """The receiver's check can fail: a wrong secret, or a body changed after signing."""
    from app.alerts.channels import signature

    body = b'{"kind": "test"}'
    now = str(int(datetime.now(UTC).timestamp()))
    good = {"X-KVMVDI-Timestamp": now, "X-KVMVDI-Signature": signature(SECRET.encode(), now, body)}
    assert receiver.verify(good, body)
    assert not receiver.verify(good, body + b" ")
    assert not receiver.verify({**good, "X-KVMVDI-Signature": signature(b"other", now, body)}, body)
    old = str(int(now) - 3600)
    assert not receiver.verify(
        {"X-KVMVDI-Timestamp": old, "X-KVMVDI-Signature": signature(SECRET.encode(), old, body)}, body
    )


async def test_the_rate_limit_holds_alerts_back_and_sends_the_latest_when_its_window_ends(
    dashboard_factory: DashboardFactory, receiver: WebhookReceiver
) -> None:
    running = await dashboard_factory(alerts=alert_settings(None, receiver, rate_limit=1.0))
    first = await fail_operation(running, error="first")
    await eventually(lambda: len(receiver.received) == 1, "the first alert at once")
    await fail_operation(running, error="second")
    last = await fail_operation(running, error="third")
    # Held back: the latest goes out once the window ends, saying how many more were held.
    await eventually(lambda: len(receiver.received) == 2, "the held-back alert after the window")
    assert [r.body["details"]["operation_id"] for r in receiver.received] == [first, last]
    assert receiver.received[1].body["suppressed"] == 1
    assert "third" in receiver.received[1].body["text"]


async def test_a_failing_channel_is_retried_with_back_off_and_never_holds_up_the_producer_or_the_other(
    dashboard_factory: DashboardFactory, smtp_server: SmtpServer, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 2
    flaky = await dashboard_factory(alerts=alert_settings(None, receiver))
    await fail_operation(flaky)
    await eventually(lambda: receiver.received, "the webhook on its third attempt")
    assert receiver.refused == 2 and receiver.received[0].signature_ok

    # A webhook that accepts the connection and never answers: the operation ends, the e-mail goes
    # out while the webhook still waits, which then times out, is given up on, counted and logged.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    settings = alert_settings(smtp_server, None, retries=0, timeout=4)
    settings |= {"webhook_url": f"http://127.0.0.1:{silent.getsockname()[1]}/x", "webhook_secret": SECRET}
    try:
        broken = await dashboard_factory(alerts=settings, admin_password=None, metrics={"token": "m" * 24})
        await fail_operation(broken)
        dispatcher = broken.services.alerts.dispatcher
        await eventually(lambda: mails_to(smtp_server, broken), "the e-mail, whatever the webhook does")
        assert ("webhook", "failed") not in dispatcher.delivered
        await eventually(lambda: dispatcher.delivered.get(("webhook", "failed")) == 1, "the webhook given up")
    finally:
        silent.close()
    assert "timed out" in dispatcher.last_errors()["webhook"]
    async with httpx.AsyncClient(base_url=broken.url) as http:
        text = (await http.get("/metrics", headers={"Authorization": "Bearer " + "m" * 24})).text
    assert 'kvmvdi_alerts_total{channel="webhook",kind="operation_failed",result="failed"} 1.0' in text
    assert 'kvmvdi_alerts_total{channel="email",kind="operation_failed",result="sent"} 1.0' in text


async def test_a_refusal_for_want_of_a_free_desktop_raises_pool_exhausted(
    dashboard_factory: DashboardFactory, receiver: WebhookReceiver
) -> None:
    running = await dashboard_factory(alerts=alert_settings(None, receiver))
    db = running.services.db
    user_id = await add_client(db, "zoe")
    pool_id = await add_pool(db, "lab-room", [], [user_id])
    async with httpx.AsyncClient(base_url=running.url) as http:
        token = (
            await http.post("/api/v1/login", json={"username": "zoe", "password": CLIENT_PASSWORD})
        ).json()["token"]
        refused = await http.post(
            f"/api/v1/pools/{pool_id}/desktop", headers={"Authorization": f"Bearer {token}"}
        )
    assert refused.json()["error"] == "no_free_desktop"
    (posted,) = await eventually(lambda: receiver.received, "the pool alert")
    assert posted.body["kind"] == "pool_exhausted" and posted.body["subject"] == "lab-room"


def certificate(path: Path, valid_for: timedelta, *, key_path: Path | None = None) -> Path:
    """A self-signed certificate valid for ``valid_for`` more; its key too with ``key_path``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vdi.example.org")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + valid_for)
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    path.write_bytes(cert.public_bytes(Encoding.PEM))
    if key_path is not None:
        key_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def test_certificates_near_expiry_expired_or_unreadable_raise_alerts(tmp_path: Path) -> None:
    found = certificate_alerts(
        {
            "fresh": certificate(tmp_path / "fresh.pem", timedelta(days=200)),
            "soon": certificate(tmp_path / "soon.pem", timedelta(days=10, hours=1)),
            "urgent": certificate(tmp_path / "urgent.pem", timedelta(days=2, hours=1)),
            "expired": certificate(tmp_path / "expired.pem", timedelta(days=-1)),
            "broken": (tmp_path / "broken.pem"),
        },
        warn_days=21,
    )
    by_subject = {alert.subject: alert for alert in found}
    assert set(by_subject) == {"soon", "urgent", "expired", "broken"}
    assert by_subject["soon"].title == "Certificate soon expires in 10 days"
    assert (by_subject["soon"].severity, by_subject["urgent"].severity) == ("warning", "critical")
    assert by_subject["expired"].title == "Certificate expired expired"
    assert "cannot be read" in by_subject["broken"].title


async def test_the_dashboards_certificates_are_checked_at_start(
    dashboard_factory: DashboardFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    soon = certificate(tmp_path / "spice-ca.pem", timedelta(days=5))
    await dashboard_factory(alerts=alert_settings(None, receiver, certificate_files=[str(soon)]))
    (posted,) = await eventually(lambda: receiver.received, "the certificate alert")
    assert posted.body["kind"] == "certificate_expiry" and posted.body["subject"] == "spice-ca.pem"
    assert posted.body["severity"] == "critical"


async def test_the_console_ca_is_watched_without_being_listed(
    dashboard_factory: DashboardFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    ca_dir = tmp_path / "console-ca"
    ca_dir.mkdir()
    certificate(ca_dir / "ca.pem", timedelta(days=20, hours=1), key_path=ca_dir / "ca.key")
    await dashboard_factory(console={"ca_dir": ca_dir}, alerts=alert_settings(None, receiver))
    (posted,) = await eventually(lambda: receiver.received, "the console CA alert")
    assert posted.body["kind"] == "certificate_expiry" and posted.body["subject"] == "SPICE CA"
    assert posted.body["severity"] == "warning"


async def test_the_settings_page_shows_the_channels_and_sends_a_test_alert(
    dashboard_factory: DashboardFactory, receiver: WebhookReceiver
) -> None:
    running = await dashboard_factory(alerts=alert_settings(None, receiver))
    admin = await running.admin()
    sent = await admin.post("/settings/alerts/test")
    assert sent.status_code == 303 and "Test+alert+queued+for+webhook" in sent.headers["location"]
    (posted,) = await eventually(lambda: receiver.received, "the test alert")
    assert posted.signature_ok and posted.body["kind"] == "test" and posted.body["subject"] == "admin"
    assert posted.body["text"] == (
        "admin sent this test alert from the Settings page. Alerts reach you this way."
    )
    page = (await admin.get("/settings")).text
    assert 'id="alerts-card"' in page and "webhook" in page and "/settings/alerts/test" in page
    # The webhook's URL and secret are configured, and never shown.
    assert receiver.url not in page and SECRET not in page


async def test_the_admin_api_sends_a_test_alert_says_where_it_went_and_audits_it(
    dashboard_factory: DashboardFactory, receiver: WebhookReceiver
) -> None:
    running = await dashboard_factory(alerts=alert_settings(None, receiver, rate_limit=3600))
    admin = await running.admin()
    full, reader = await make_token(admin, "alerting"), await make_token(admin, "watch", read_only="on")
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as script:
        refused = await script.post(f"{API}/alerts/test", headers=bearer(reader))
        assert (refused.status_code, refused.json()["error"]) == (403, "read_only_token")
        # In the sender's language, as the test alert's title.
        sent = await script.post(f"{API}/alerts/test", headers={**bearer(full), "Accept-Language": "lt"})
        assert sent.status_code == 200, sent.text
        assert sent.json() == {
            "channels": ["webhook"],
            "queued": ["webhook"],
            "dropped": [],
            "held_back": False,
        }
        (posted,) = await eventually(lambda: receiver.received, "the test alert")
        assert posted.signature_ok and posted.body["kind"] == "test" and posted.body["subject"] == "admin"
        assert posted.body["text"] == (
            "admin išsiuntė šį bandomąjį įspėjimą per administravimo API. Įspėjimai jus pasiekia šiuo keliu."
        )
        # A second one inside the rate limit's window is held back, and the answer says so.
        again = await script.post(f"{API}/alerts/test", headers=bearer(full))
        assert again.json() == {"channels": ["webhook"], "queued": [], "dropped": [], "held_back": True}
    entries = await running.services.db.fetch_all(
        sa.select(audit_log).where(audit_log.c.action == "alert_test").order_by(audit_log.c.id)
    )
    assert [(entry["actor"], json.loads(entry["details_json"])) for entry in entries] == [
        ("admin", {"queued": ["webhook"], "dropped": [], "held_back": False, "via_api_token": "alerting"}),
        ("admin", {"queued": [], "dropped": [], "held_back": True, "via_api_token": "alerting"}),
    ]


async def test_a_test_alert_without_any_channel_is_refused_by_name(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    refused = await admin.post(f"{API}/alerts/test", json={})
    assert (refused.status_code, refused.json()["error"]) == (409, "no_alert_channel")


def test_an_e_mail_subject_stays_one_line_whatever_a_name_holds() -> None:
    from app.alerts.channels import email_message
    from app.alerts.model import Alert

    alert = Alert(
        "pool_exhausted", "warning", "a\r\nBcc: x@example.org", "Pool a\r\nBcc: x@example.org is full", "t"
    )
    message = email_message(alert, sender="vdi@example.org", recipients=["ops@example.org"], dashboard="")
    assert message["Subject"] == "[KVM-VDI] Pool a Bcc: x@example.org is full"
    assert message["Bcc"] is None


async def test_a_hypervisor_found_down_at_start_is_announced(
    dashboard_factory: DashboardFactory, receiver: WebhookReceiver, database_url: str
) -> None:
    """It failed its first connection while the dashboard started, before any transition could be seen."""
    from tests.broker.records import add_hypervisor

    await asyncio.to_thread(database.upgrade, database_url)
    db = database.connect_database(database_url)
    await db.connect()
    try:
        await add_hypervisor(db, "gone", state="down", uri="test:///no/such/definition.xml")
    finally:
        await db.disconnect()
    await dashboard_factory(alerts=alert_settings(None, receiver))
    (posted,) = await eventually(lambda: receiver.received, "the down alert")
    assert posted.body["kind"] == "hypervisor_down" and posted.body["subject"] == "gone"


async def test_check_names_the_alert_channels_and_each_certificates_time_left(
    database_url: str, tmp_path: Path
) -> None:
    from app.checks import run_checks
    from tests.dashboard import make_settings

    await asyncio.to_thread(database.upgrade, database_url)
    soon = certificate(tmp_path / "soon.pem", timedelta(days=9, hours=1))
    fine = certificate(tmp_path / "fine.pem", timedelta(days=300))
    quiet = make_settings(
        tmp_path / "var", database_url, alerts={"certificate_files": [str(soon), str(fine)]}
    )
    report = await run_checks(quiet, config_source=None)
    lines = {line.subject: line for line in report.lines}
    assert (lines["alerts"].result, lines["certificate soon.pem"].result) == ("warn", "warn")
    assert "expires in 9 days" in lines["certificate soon.pem"].detail
    assert lines["certificate fine.pem"].result == "ok" and report.ok

    expired = certificate(tmp_path / "old.pem", timedelta(days=-2))
    mailing = make_settings(
        tmp_path / "var",
        database_url,
        alerts={"email_to": ["ops@example.org"], "certificate_files": [str(expired)]},
    )
    report = await run_checks(mailing, config_source=None)
    lines = {line.subject: line for line in report.lines}
    assert lines["alerts"].detail == "sent by e-mail"
    assert lines["certificate old.pem"].result == "FAIL" and not report.ok
