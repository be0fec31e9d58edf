"""Alerts by e-mail and signed webhook: :class:`Alerts` wires rules, channels and the dispatcher.

Rules (:mod:`.rules`, :mod:`.certificates`) turn events into alerts; the dispatcher
(:mod:`.dispatcher`) rate-limits them and delivers them off the producers' path
through the configured channels (:mod:`.channels`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from app.alerts.certificates import CertificateWatch
from app.alerts.channels import EmailChannel, WebhookChannel
from app.alerts.dispatcher import AlertDispatcher, Channel, Delivery, DeliveryListener
from app.alerts.model import Alert
from app.alerts.rules import AlertRules
from app.hyper.events import ConnectionEvent
from app.hyper.registry import HypervisorRegistry
from app.settings import Settings

__all__ = ["Alert", "AlertRules", "Alerts", "Delivery"]


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
    ) -> None:
        """``certificates``: more certificate files to watch by name (e.g. the SPICE CA)."""
        config = settings.alerts
        dashboard = settings.server.public_origins[0] if settings.server.public_origins else ""
        channels: list[Channel] = []
        if config.email_to:
            channels.append(EmailChannel(config, dashboard))
        if config.webhook_url is not None:
            channels.append(WebhookChannel(config, dashboard))
        self.dispatcher = AlertDispatcher(config, channels, listeners=delivery_listeners)
        self.rules = AlertRules(self.dispatcher.submit)
        self.certificates = CertificateWatch(
            watched_certificates(settings, certificates or {}),
            self.dispatcher.submit,
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

    def submit(self, alert: Alert) -> None:
        self.dispatcher.submit(alert)

    async def start(self) -> None:
        await self.dispatcher.start()
        await self.certificates.start()

    async def stop(self) -> None:
        await self.certificates.stop()
        await self.dispatcher.stop()
