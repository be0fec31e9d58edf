"""What an alert is: a kind, the thing it is about, words for people, details for machines."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, cast

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

    def to_record(self) -> dict[str, Any]:
        """Everything, for :meth:`from_record` in another replica (``at`` naive UTC, as kept)."""
        return {**self.as_json(), "at": self.at.isoformat(), "key": self.key}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Alert:
        severity = str(record["severity"])
        if severity not in ("critical", "warning", "info"):
            raise ValueError(f"unknown alert severity {severity!r}")
        return cls(
            kind=str(record["kind"]),
            severity=cast(Severity, severity),
            subject=str(record["subject"]),
            title=str(record["title"]),
            text=str(record["text"]),
            details=dict(record.get("details") or {}),
            at=datetime.fromisoformat(str(record["at"])),
            key=str(record.get("key", "")),
            suppressed=int(record.get("suppressed", 0)),
        )
