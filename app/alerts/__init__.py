"""Alerts by e-mail and signed webhook: :class:`Alerts` wires rules, channels and the dispatcher.

Rules (:mod:`.rules`, :mod:`.certificates`) turn events into alerts; the dispatcher
(:mod:`.dispatcher`) rate-limits them and delivers them off the producers' path
through the configured channels (:mod:`.channels`).

With several replicas each alert goes out once for the cluster: every replica raises the
alerts whose cause it sees and hands them to a relay (:class:`AlertRelay`, a Redis list);
delivering them, like checking certificates, is a background duty of the one replica
holding the duty lease, so one dispatcher and one rate limit serve the whole cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

from app.alerts.certificates import CertificateWatch
from app.alerts.channels import EmailChannel, WebhookChannel
from app.alerts.dispatcher import AlertDispatcher, Channel, Delivery, DeliveryListener, Submitted
from app.alerts.model import Alert
from app.alerts.rules import AlertRules
from app.cluster.duties import Duties
from app.hyper.events import ConnectionEvent
from app.hyper.registry import HypervisorRegistry
from app.i18n import N_
from app.i18n import gettext as _
from app.settings import Settings

__all__ = ["Alert", "AlertRelay", "AlertRules", "Alerts", "Delivery"]

log = logging.getLogger("kvmvdi.alerts")

TestAlertOrigin = Literal["settings", "api"]
TEST_ALERT_TEXTS: dict[TestAlertOrigin, str] = {
    "settings": N_("{sender} sent this test alert from the Settings page. Alerts reach you this way."),
    "api": N_("{sender} sent this test alert through the admin API. Alerts reach you this way."),
}


class AlertRelay(Protocol):
    """Where the replicas of a cluster put their alerts for the one that delivers them."""

    async def push(self, alert: Alert) -> None:
        """Hand ``alert`` over; raises when that is impossible now."""

    async def deliver(self, dispatch: Callable[[Alert], None]) -> None:
        """Take the alerts handed over, in order, and ``dispatch`` them; until cancelled."""


def watched_certificates(settings: Settings, extra: Mapping[str, Path]) -> dict[str, Path]:
    """The dashboard's TLS certificate, the files listed in ``alerts.certificate_files``, and ``extra``."""
    found: dict[str, Path] = {}
    if settings.server.ssl_certfile:
        found["dashboard TLS"] = Path(settings.server.ssl_certfile)
    for name in settings.alerts.certificate_files:
        found[Path(name).name] = Path(name)
    return {**found, **extra}


class Alerts:
    def __init__(
        self,
        settings: Settings,
        *,
        delivery_listeners: Sequence[DeliveryListener] = (),
        certificates: Mapping[str, Path] | None = None,
        relay: AlertRelay | None = None,
    ) -> None:
        """``certificates``: more certificate files to watch by name (e.g. the SPICE CA);
        ``relay``: where alerts go for delivery by the duty holder (a cluster), else delivered here."""
        config = settings.alerts
        dashboard = settings.server.public_origins[0] if settings.server.public_origins else ""
        channels: list[Channel] = []
        if config.email_to:
            channels.append(EmailChannel(config, dashboard))
        if config.webhook_url is not None:
            channels.append(WebhookChannel(config, dashboard))
        self.dispatcher = AlertDispatcher(config, channels, listeners=delivery_listeners)
        self._relay = relay
        # Alerts on their way to the relay (bounded: beyond, this replica delivers them itself).
        self._relaying: set[asyncio.Task[None]] = set()
        self._relay_limit = config.queue_size
        self.rules = AlertRules(self.raise_alert)
        self.certificates = CertificateWatch(
            watched_certificates(settings, certificates or {}),
            self.raise_alert,
            warn_days=config.certificate_warning_days,
            interval=config.certificate_check_interval,
        )

    def watch_hypervisors(self, registry: HypervisorRegistry) -> Callable[[], None]:
        """Alert on the registry's down/up transitions from now on, and on those already down
        (a hypervisor found down at start, or down across a restart, is announced, and so is
        its return). Returns the unsubscribe function.

        With several replicas, only the one recording hypervisor state (the duty holder) alerts:
        every replica sees the same transitions."""

        def changed(event: ConnectionEvent) -> None:
            if registry.recording:
                self.rules.connection_changed(event)

        for hv in registry.all():
            if hv.state == "down":
                changed(ConnectionEvent(hv.id, hv.name, hv.state, hv.reason, hv.maintenance))
        return registry.add_connection_listener(changed)

    def submit(self, alert: Alert) -> Submitted:
        """Deliver ``alert`` from this replica now (the test alert), rate limit applied."""
        return self.dispatcher.submit(alert)

    def send_test(self, sender: str, *, origin: TestAlertOrigin) -> Submitted | None:
        """A test alert from ``sender`` (on the Settings page or through the admin API) to every
        channel; None when no channel is configured."""
        if not self.dispatcher.channels:
            return None
        text = _(TEST_ALERT_TEXTS[origin]).format(sender=sender)
        return self.submit(
            Alert(kind="test", severity="info", subject=sender, title=_("Test alert"), text=text)
        )

    def _dispatch(self, alert: Alert) -> None:
        self.dispatcher.submit(alert)

    def raise_alert(self, alert: Alert) -> None:
        """An alert the rules found: to the relay (a cluster) or straight to delivery; never blocks."""
        if self._relay is None or len(self._relaying) >= self._relay_limit:
            self.dispatcher.submit(alert)
            return
        task = asyncio.get_running_loop().create_task(self._relayed(self._relay, alert))
        self._relaying.add(task)
        task.add_done_callback(self._relaying.discard)

    async def _relayed(self, relay: AlertRelay, alert: Alert) -> None:
        try:
            await relay.push(alert)
        except Exception as exc:
            # Sent from here rather than lost (it may then go out twice: better than never).
            log.warning(
                "alert %s (%s) not handed to the cluster, delivered here: %s", alert.kind, alert.subject, exc
            )
            self.dispatcher.submit(alert)

    def run_duties(self, duties: Duties) -> None:
        """Checking certificates and delivering the relayed alerts are background duties."""
        duties.add("certificate-watch", self.certificates.run)
        if self._relay is not None:
            relay = self._relay
            duties.add("alert-delivery", lambda: relay.deliver(self._dispatch))

    async def start(self) -> None:
        await self.dispatcher.start()

    async def stop(self) -> None:
        for task in list(self._relaying):
            task.cancel()
        await asyncio.gather(*self._relaying, return_exceptions=True)
        await self.dispatcher.stop()
