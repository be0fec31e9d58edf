"""What the services of this run did, for the end-of-session summary."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    service: str
    message: str
    seconds: float | None = None

    def line(self) -> str:
        took = f" in {self.seconds:.2f} s" if self.seconds is not None else ""
        return f"{self.service}: {self.message}{took}"


_events: list[Event] = []
_lock = threading.Lock()


def note(service: str, message: str, seconds: float | None = None) -> None:
    with _lock:
        _events.append(Event(service, message, seconds))


def events() -> list[Event]:
    with _lock:
        return list(_events)
