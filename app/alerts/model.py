"""What an alert is: a kind, the thing it is about, words for people, details for machines."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from app.clock import utcnow

Severity = Literal["critical", "warning", "info"]
KINDS = (
    "hypervisor_down",
    "hypervisor_up",
    "operation_failed",
    "pool_exhausted",
    "certificate_expiry",
    "test",
)


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: Severity
    # What it is about: a hypervisor's, pool's or certificate's name, an operation kind.
    subject: str
    title: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    # Alerts of one key share a rate limit: the same hypervisor's down and back, the same pool.
    key: str = ""
    # How many alerts of this key the rate limit held back before this one.
    suppressed: int = 0

    @property
    def limit_key(self) -> str:
        return self.key or f"{self.kind}:{self.subject}"

    def with_suppressed(self, count: int) -> Alert:
        return replace(self, suppressed=count)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "subject": self.subject,
            "title": self.title,
            "text": self.text,
            "details": self.details,
            "at": self.at.isoformat() + "Z",
            "suppressed": self.suppressed,
        }
