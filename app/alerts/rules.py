"""When the dashboard raises an alert: the observers that turn events into :class:`Alert` s.

- a hypervisor marked down (fenced), and back up after that (registry connection listener);
- an operation that failed (operations runner observer);
- a desktop request refused because the pool has no free desktop (broker observer);
- a certificate that expires within ``certificate_warning_days`` (:mod:`app.alerts.certificates`).
"""

from __future__ import annotations

from collections.abc import Callable

from app.alerts.model import Alert
from app.broker.desktops import DesktopRequest
from app.hyper.events import ConnectionEvent
from app.i18n import gettext as _
from app.vms.operations import FinishedOperation

Submit = Callable[[Alert], None]


class AlertRules:
    def __init__(self, submit: Submit) -> None:
        self._submit = submit
        # Hypervisors reported down, so that "back up" follows only a "down".
        self._down: set[int] = set()

    def connection_changed(self, event: ConnectionEvent) -> None:
        key = f"hypervisor:{event.hypervisor_id}"
        if event.state == "down" and event.hypervisor_id not in self._down:
            self._down.add(event.hypervisor_id)
            self._submit(
                Alert(
                    kind="hypervisor_down",
                    severity="critical",
                    subject=event.name,
                    title=_("Hypervisor {name} is down").format(name=event.name),
                    text=_(
                        "Hypervisor {name} cannot be reached and is fenced: nothing new is placed or "
                        "started there until it answers again. Reason: {reason}."
                    ).format(name=event.name, reason=event.reason or _("unknown")),
                    details={"hypervisor": event.name, "reason": event.reason},
                    key=key,
                )
            )
        elif event.state == "up" and event.hypervisor_id in self._down:
            self._down.discard(event.hypervisor_id)
            self._submit(
                Alert(
                    kind="hypervisor_up",
                    severity="info",
                    subject=event.name,
                    title=_("Hypervisor {name} is back up").format(name=event.name),
                    text=_("Hypervisor {name} answers again and takes new work.").format(name=event.name),
                    details={"hypervisor": event.name},
                    key=key,
                )
            )
        elif event.state == "removed":
            self._down.discard(event.hypervisor_id)

    def operation_finished(self, operation: FinishedOperation) -> None:
        if operation.state != "failed":
            return
        self._submit(
            Alert(
                kind="operation_failed",
                severity="warning",
                subject=operation.kind,
                title=_("Operation {kind} #{id} failed").format(kind=operation.kind, id=operation.id),
                text=_("Operation {kind} #{id} failed after {seconds:.0f} s: {error}").format(
                    kind=operation.kind, id=operation.id, seconds=operation.seconds, error=operation.error
                ),
                details={
                    "operation_id": operation.id,
                    "kind": operation.kind,
                    "vm_id": operation.vm_id,
                    "error": operation.error,
                    "started_by": operation.created_by,
                },
            )
        )

    def desktop_requested(self, request: DesktopRequest) -> None:
        if request.refusal != "no_free_desktop":
            return
        self._submit(
            Alert(
                kind="pool_exhausted",
                severity="warning",
                subject=request.pool_name,
                title=_("Pool {pool_name} has no free desktop").format(pool_name=request.pool_name),
                text=_(
                    "A user was refused a desktop of pool {pool}: all its desktops are in use "
                    "or unavailable. Add desktops to the pool or free some."
                ).format(pool=request.pool_name),
                details={"pool": request.pool_name, "pool_id": request.pool_id},
            )
        )
