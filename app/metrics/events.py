"""Counters and histograms fed at the event sites, through observers given at construction.

Everything else (desktops per pool, leases, hypervisors, open consoles, live
subscribers) is read when Prometheus scrapes: see :mod:`app.metrics.state`.
Nothing here runs on the console pump's path: the proxy already counts bytes per
channel, and :meth:`Metrics.console_session_ended` adds a session's totals when it ends.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.alerts.dispatcher import Delivery
from app.audit import AuditEntry
from app.broker.desktops import DesktopRequest
from app.proxy.sessions import EndedSession
from app.vms.operations import FinishedOperation

# Audit actions of log-ins and the result each stands for.
LOGIN_RESULTS = {"login": "success", "login_failed": "failure", "login_throttled": "throttled"}

# A console session lasts minutes to a working day.
SESSION_BUCKETS = (10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200)
# A desktop request answers in milliseconds (a running desktop) to seconds (a start or reset).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Operations: a batch create in seconds, a disk copy in minutes to hours.
OPERATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """The dashboard's event metrics, in a registry of its own (never the library's global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.console_sessions_ended = Histogram(
            "kvmvdi_console_session_duration_seconds",
            "Length of ended console sessions (first channel opened to last channel closed)",
            ["via"],
            buckets=SESSION_BUCKETS,
            registry=r,
        )
        # Bytes of ended sessions; the open sessions' bytes are added at scrape time.
        self.ended_bytes = {"to_client": 0, "to_vm": 0}
        self.desktop_requests = Counter(
            "kvmvdi_desktop_requests",
            "Answered desktop requests by pool and answer (ready, booting, failover, refused, failed)",
            ["pool", "status"],
            registry=r,
        )
        self.desktop_refusals = Counter(
            "kvmvdi_desktop_refusals",
            "Desktop requests refused or failed, by pool and reason (no_free_desktop, maintenance ...)",
            ["pool", "reason"],
            registry=r,
        )
        self.allocation_seconds = Histogram(
            "kvmvdi_desktop_request_duration_seconds",
            "Time to answer a desktop request (allocation, start or reset, console grant)",
            ["pool"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.operations = Counter(
            "kvmvdi_operations", "Finished long operations by kind and result", ["kind", "result"], registry=r
        )
        self.operation_seconds = Histogram(
            "kvmvdi_operation_duration_seconds",
            "Duration of finished long operations by kind",
            ["kind"],
            buckets=OPERATION_BUCKETS,
            registry=r,
        )
        self.logins = Counter(
            "kvmvdi_logins", "Log-ins by area (admin, portal, api) and result", ["area", "result"], registry=r
        )
        self.alerts = Counter(
            "kvmvdi_alerts",
            "Alert deliveries by kind, channel and result (sent, failed after retries, dropped)",
            ["kind", "channel", "result"],
            registry=r,
        )
        self.loop_lag_last = Gauge(
            "kvmvdi_event_loop_lag_last_seconds", "The latest event-loop lag sample", registry=r
        )
        self.loop_lag = Histogram(
            "kvmvdi_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled periodically)",
            buckets=LAG_BUCKETS,
            registry=r,
        )

    # -- observers (plain callbacks; they only count) ---------------------------------------

    def console_session_ended(self, session: EndedSession) -> None:
        self.console_sessions_ended.labels(session.via).observe(session.seconds)
        self.ended_bytes["to_client"] += session.bytes_to_client
        self.ended_bytes["to_vm"] += session.bytes_to_vm

    def desktop_requested(self, request: DesktopRequest) -> None:
        self.desktop_requests.labels(request.pool_name, request.status).inc()
        self.allocation_seconds.labels(request.pool_name).observe(request.seconds)
        if request.refusal:
            self.desktop_refusals.labels(request.pool_name, request.refusal).inc()

    def operation_finished(self, operation: FinishedOperation) -> None:
        self.operations.labels(operation.kind, operation.state).inc()
        self.operation_seconds.labels(operation.kind).observe(operation.seconds)

    def audited(self, entry: AuditEntry) -> None:
        result = LOGIN_RESULTS.get(entry.action)
        if result is not None:
            self.logins.labels(str(entry.details.get("area") or "admin"), result).inc()

    def alert_delivered(self, delivery: Delivery) -> None:
        self.alerts.labels(delivery.alert.kind, delivery.channel, delivery.result).inc()

    def loop_lagged(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        self.loop_lag_last.set(seconds)
