"""The records of long operations: a row as read back, one that just ended, a refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.db.records import Record
from app.db.schema import operations
from app.i18n.messages import Message, kept_message, shown
from app.vms.errors import Refused

ACTIVE_STATES = ("pending", "running")
TEMP_KEY = "_temp_files"


class VmBusy(Refused):
    code = "busy"

    def __init__(self, names: list[str]) -> None:
        self.names = names
        verb = "is" if len(names) == 1 else "are"
        super().__init__(f"{', '.join(names)} {verb} busy with another operation: wait for it to end")


@dataclass(frozen=True)
class Operation(Record):
    __table__ = operations

    id: int
    kind: str
    vm_id: int | None
    hypervisor_id: int | None
    state: str
    progress: float
    # English text; message_i18n keeps it to be shown in the reader's language (see app.i18n.messages).
    message: str
    message_i18n: str
    error: str
    params_json: str
    created_by: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    # The dashboard replica running it ("" with one process).
    replica: str

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = json.loads(self.params_json or "{}")
        return params

    @property
    def kept_message(self) -> Message | None:
        """The message kept to be shown in each reader's language, if there is one."""
        return kept_message(self.message_i18n)

    @property
    def text(self) -> str:
        """The message in the current language."""
        return shown(self.message, self.message_i18n)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "vm_id": self.vm_id,
            "vm_ids": list(self.params.get("vm_ids", [])),
            "hypervisor_id": self.hypervisor_id,
            "state": self.state,
            "progress": round(self.progress, 1),
            "message": self.text,
            "error": self.error,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True)
class FinishedOperation:
    """An operation that just ended, as listeners (metrics, alerts) see it."""

    id: int
    kind: str
    vm_id: int | None
    # succeeded, failed or interrupted
    state: str
    seconds: float
    error: str
    created_by: str


# Called when an operation ends; must not block (count, enqueue, nothing more).
OperationListener = Callable[[FinishedOperation], None]
