"""What the registry tells its listeners: domain lifecycle changes and hypervisor up/down."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import libvirt

from app.db.health import log_failure

log = logging.getLogger("kvmvdi.hyper.events")

_EVENT_NAMES = (
    "defined",
    "undefined",
    "started",
    "suspended",
    "resumed",
    "stopped",
    "shutdown",
    "pmsuspended",
    "crashed",
)
EVENTS: dict[int, str] = {getattr(libvirt, f"VIR_DOMAIN_EVENT_{name.upper()}"): name for name in _EVENT_NAMES}


def _details(event: str) -> dict[int, str]:
    prefix = f"VIR_DOMAIN_EVENT_{event.upper()}_"
    return {
        getattr(libvirt, const): const[len(prefix) :].lower()
        for const in dir(libvirt)
        if const.startswith(prefix) and not const.endswith("_LAST")
    }


DETAILS: dict[str, dict[int, str]] = {name: _details(name) for name in _EVENT_NAMES}

# The state a domain is in right after the event; ``None``: it must be asked (a
# definition can change while the domain runs; "shutdown" precedes "stopped").
IMPLIED_STATE: dict[str, str | None] = {
    "defined": None,
    "undefined": None,
    "started": "running",
    "suspended": "paused",
    "resumed": "running",
    "stopped": "shutoff",
    "shutdown": None,
    "pmsuspended": "pmsuspended",
    "crashed": "crashed",
}


@dataclass(frozen=True)
class DomainEvent:
    """A domain changed on a hypervisor.

    ``state`` is the domain's state after the event (running, shutoff, paused,
    crashed, pmsuspended, unknown) or ``"undefined"`` when it no longer exists.
    Events that do not imply a state (defined, undefined, shutdown) carry the state
    read when the event is delivered, so the last event of a domain always tells
    its current state. Events of one hypervisor arrive in the order they happened.
    ``event`` is libvirt's lifecycle event (started, stopped, defined, undefined,
    suspended, resumed, shutdown, pmsuspended, crashed) or ``"rebooted"``;
    ``reason`` its detail (booted, destroyed, shutdown, crashed, added, ...).
    """

    hypervisor_id: int
    name: str
    uuid: str
    state: str
    reason: str
    event: str = ""


@dataclass(frozen=True)
class ConnectionEvent:
    """A hypervisor's state changed: "up", "down" or "unknown" (with the reason), or it was "removed"."""

    hypervisor_id: int
    name: str
    state: str
    reason: str
    maintenance: bool = False


def describe_lifecycle(event: int, detail: int) -> tuple[str, str]:
    """libvirt's (event, detail) numbers as names, e.g. ("stopped", "destroyed")."""
    name = EVENTS.get(event, f"event-{event}")
    return name, DETAILS.get(name, {}).get(detail, f"detail-{detail}")


E = TypeVar("E")
Listener = Callable[[E], Awaitable[None] | None]


class Listeners(Generic[E]):
    """Callbacks (plain or async) called in registration order; one failing never stops the others."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._callbacks: list[Listener[E]] = []

    def add(self, callback: Listener[E], *, first: bool = False) -> Callable[[], None]:
        """Register ``callback`` (``first``: before those already there); returns an unregister function."""
        if first:
            self._callbacks.insert(0, callback)
        else:
            self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    async def emit(self, item: E) -> None:
        for callback in tuple(self._callbacks):
            try:
                outcome = callback(item)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log_failure(log, "%s listener %r failed", self._kind, callback)
