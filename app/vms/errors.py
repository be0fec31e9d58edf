"""Errors of the VM workflows: each says what is wrong and what to do, in words for an admin.

``code`` is the stable ``error`` of JSON answers; ``status`` the HTTP status a
handler answers with.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from app.i18n import gettext as _
from app.i18n import ngettext

if TYPE_CHECKING:
    from app.vms.records import Vm


class VmError(Exception):
    code = "vm_error"
    status = 409

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Extra facts for JSON answers (what a confirmation must name, ...).
        self.details = details or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class NotFound(VmError):
    code = "not_found"
    status = 404


class Refused(VmError):
    """The request is valid, but the current state forbids it (busy, locked, hypervisor down ...)."""

    code = "refused"
    status = 409


class Invalid(VmError):
    """Bad input: ``errors`` maps each field to a message."""

    code = "invalid"
    status = 400

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


def refuse_if_busy(name: str, operation_id: int | None) -> None:
    """Refused while an operation holds the VM: one change at a time."""
    if operation_id is not None:
        raise Refused(
            _("{name} is busy with operation {operation_id}: wait for it to end").format(
                name=name, operation_id=operation_id
            ),
            code="busy",
        )


def refuse_if_any_busy(vms: Iterable[Vm]) -> None:
    """Refused while an operation holds any of ``vms``, naming every busy one."""
    busy = [vm.name for vm in vms if vm.operation_id is not None]
    if busy:
        raise Refused(
            ngettext(
                "{names} is busy with an operation: wait for it to end",
                "{names} are busy with an operation: wait for it to end",
                len(busy),
            ).format(names=", ".join(busy)),
            code="busy",
        )


def domain_missing(name: str, hypervisor: str) -> Refused:
    """The VM's domain was undefined outside the dashboard: the admin's to resolve, not a failure."""
    return Refused(
        _(
            "{name} has no domain on {hypervisor}: it was removed outside the dashboard; "
            "delete the VM here, or define its domain again"
        ).format(name=name, hypervisor=hypervisor),
        code="domain_missing",
    )


class HypervisorFailure(VmError):
    """The hypervisor refused or failed a command; the message carries its reason."""

    code = "hypervisor_error"
    status = 502
