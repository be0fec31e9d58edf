"""Operations left behind: interrupted honestly, their temporary files removed.

A dashboard that stops cancels its running operations itself. What a crash (or a replica's
death) leaves active is found here: at start, a process interrupts the leftovers of its
previous run (a replica only its own); the holder of the background duties interrupts those
of replicas that stopped answering. Temporary files are removed at once when their
hypervisor answers, else when it connects again (:meth:`Leftovers.clean_up_for`). A row
changes only while still active, in one transaction: an operation ends once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from app.clock import utcnow
from app.db.records import Identified, fetch_record, fetch_records
from app.db.retry import retrying, transaction
from app.db.schema import operations, vms
from app.i18n import N_
from app.i18n.messages import M_, Message, live_fields
from app.vms.operation_records import ACTIVE_STATES, TEMP_KEY, FinishedOperation, Operation

if TYPE_CHECKING:
    from app.vms.operations import OperationsRunner

log = logging.getLogger("kvmvdi.operations")

TO_REMOVE = N_("Temporary file to remove: {paths}.")


def _files_removed(operation: Operation, done: list[str], left: list[str]) -> str | Message:
    """An interrupted operation's message once ``done`` are removed and ``left`` still to remove."""
    kept = operation.kept_message
    if kept is None:  # a row written before messages were kept: its English text, amended
        text = operation.message.split(" Temporary file to remove:")[0]
        text += " Temporary file removed: " + ", ".join(done) + "."  # i18n-ignore: old English rows
        if left:
            text += " Temporary file to remove: " + ", ".join(left) + "."  # i18n-ignore: old English rows
        return text
    message = Message(parts=tuple(part for part in kept.parts or (kept,) if part.msgid != TO_REMOVE))
    message += M_("Temporary file removed: {paths}.", paths=", ".join(done))
    if left:
        message += M_(TO_REMOVE, paths=", ".join(left))
    return message


class Leftovers:
    def __init__(self, runner: OperationsRunner) -> None:
        self._runner = runner

    async def recover(self) -> list[int]:
        """Mark operations a previous dashboard left active as ``interrupted``; their ids.

        One process interrupts every active operation; a replica of a cluster only its own
        (those of other replicas run there, or are interrupted by :meth:`interrupt_gone`).
        Their temporary files are removed now if possible, else by :meth:`clean_up_for`
        when their hypervisor connects.
        """
        query = operations.select().where(operations.c.state.in_(ACTIVE_STATES))
        if self._runner.clustered:
            query = query.where(operations.c.replica.in_((self._runner.replica, "")))
        ids: list[int] = []
        for operation in await fetch_records(self._runner.db, Operation, query):
            reason = M_("the dashboard stopped during this operation and did not resume it")
            if await self._interrupt(operation, reason, remove_now=False):
                ids.append(operation.id)
                log.warning(
                    "operation %s (%s) was interrupted by a dashboard stop", operation.id, operation.kind
                )
        return ids

    async def interrupt_gone(self, alive: set[str]) -> list[int]:
        """Interrupt the active operations of replicas that are gone (a background duty); their ids."""
        gone = await fetch_records(
            self._runner.db,
            Operation,
            operations.select().where(
                operations.c.state.in_(ACTIVE_STATES),
                operations.c.replica != "",
                operations.c.replica.not_in(sorted(alive)),
            ),
        )
        ids: list[int] = []
        for operation in gone:
            replica = operation.replica
            reason = M_(
                "dashboard replica {replica} stopped answering during this operation", replica=replica
            )
            if await self._interrupt(operation, reason, remove_now=True):
                ids.append(operation.id)
                log.warning(
                    "operation %s (%s) of gone replica %s interrupted", operation.id, operation.kind, replica
                )
        return ids

    async def _interrupt(self, operation: Operation, reason: Message, *, remove_now: bool) -> bool:
        """End an operation left active as ``interrupted`` (if it still is); temporary files removed
        now (``remove_now``) or listed for :meth:`clean_up_for`."""
        temp = [(int(hv), str(path)) for hv, path in operation.params.get(TEMP_KEY, [])]
        removed: list[str] = []
        left = temp
        if remove_now and temp:
            removed, left = await self._runner.remove_temp(operation.id, temp)
        text = M_("Interrupted at {percent} %: {reason}.", percent=round(operation.progress), reason=reason)
        if removed:
            text += M_("Temporary file removed: {paths}.", paths=", ".join(removed))
        if left:
            text += M_(TO_REMOVE, paths=", ".join(path for _, path in left))

        async def end() -> bool:
            async with transaction(self._runner.db):
                row = await fetch_record(
                    self._runner.db,
                    Identified,
                    sa.select(operations.c.id)
                    .where(operations.c.id == operation.id, operations.c.state.in_(ACTIVE_STATES))
                    .with_for_update(),
                )
                if row is None:
                    return False  # it ended meanwhile (or someone else interrupted it)
                await self._runner.store(
                    operation.id, state="interrupted", message=text, finished_at=utcnow()
                )
                await self._runner.db.execute(
                    vms.update().where(vms.c.operation_id == operation.id).values(operation_id=None)
                )
                return True

        ended = await retrying(end, what=f"interrupting operation {operation.id}")
        if ended:
            began = operation.started_at or operation.created_at
            self._runner.listeners(
                FinishedOperation(
                    id=operation.id,
                    kind=operation.kind,
                    vm_id=operation.vm_id,
                    state="interrupted",
                    seconds=(utcnow() - began).total_seconds() if began is not None else 0.0,
                    error="",
                    created_by=operation.created_by,
                )
            )
            self._runner.hub.publish(
                "operation",
                {
                    **operation.summary(),
                    "state": "interrupted",
                    **live_fields("message", text),
                    "finished_at": utcnow().isoformat(),
                },
            )
        return ended

    async def clean_up_for(self, hypervisor_id: int) -> list[str]:
        """Remove temporary files that interrupted operations left on ``hypervisor_id``; the paths."""
        ended = await fetch_records(
            self._runner.db,
            Operation,
            operations.select().where(operations.c.state.in_(("interrupted", "failed"))),
        )
        removed: list[str] = []
        for operation in ended:
            temp = [(int(hv), str(path)) for hv, path in operation.params.get(TEMP_KEY, [])]
            if not any(hv == hypervisor_id for hv, _ in temp):
                continue
            left: list[tuple[int, str]] = []
            done: list[str] = []
            for hv, path in temp:
                if hv != hypervisor_id:
                    left.append((hv, path))
                    continue
                try:
                    await self._runner.temp_remover(hv, path)
                    done.append(path)
                except Exception as exc:
                    log.warning("operation %s: could not remove %s: %s", operation.id, path, exc)
                    left.append((hv, path))
            if done:
                message = _files_removed(operation, done, [p for _, p in left])
                await self._runner.store(operation.id, message=message)
                await self._runner.save_temp_files(operation.id, left)
                removed.extend(done)
                self._runner.hub.publish(
                    "operation", {**operation.summary(), **live_fields("message", message)}
                )
        return removed
