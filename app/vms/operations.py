"""Long operations (copy disk, populate, batch create ...) with live progress.

Each operation is a row in ``operations`` (pending → running → succeeded /
failed / interrupted) and an asyncio task. The VMs it works on are *held*
(``vms.operation_id``) so that no second operation or power action can touch
them meanwhile. Progress goes to every admin browser on the hub topic
``operation``, at most :data:`PUBLISH_INTERVAL` apart (the last value is never
dropped), and to the database at most once a second.

Temporary files an operation creates are recorded in its row before they are
written. When the dashboard stops, running operations are cancelled, their
temporary files removed and the rows marked ``interrupted``; when it starts
again, rows still ``running`` (a crash) are marked ``interrupted`` the same way
and their temporary files removed as soon as their hypervisor is reachable.

With several replicas, each operation runs on the replica that started it and its
row names that replica. A restarted replica interrupts only its own leftovers; the
operations of a replica that died (no heartbeat for ``cluster.replica_timeout``) are
interrupted by the holder of the background duties, which removes their temporary
files. The row changes only if it is still active, in a transaction, so an operation
ends once: never twice, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.records import Record, fetch_record, fetch_records
from app.db.retry import retrying, transaction
from app.db.schema import operations, vms
from app.i18n import gettext as _
from app.i18n.messages import M_, Message, live_fields, stored
from app.live.hub import LiveHub
from app.observers import Observers
from app.vms.errors import VmError
from app.vms.leftovers import Leftovers
from app.vms.operation_records import (
    ACTIVE_STATES,
    TEMP_KEY,
    FinishedOperation,
    Operation,
    OperationListener,
    VmBusy,
)

__all__ = ["FinishedOperation", "Operation", "OperationContext", "OperationsRunner", "VmBusy"]

log = logging.getLogger("kvmvdi.operations")

PUBLISH_INTERVAL = 0.2  # at most 5 progress messages a second
STORE_INTERVAL = 1.0

# (hypervisor_id, path) -> removes the file; raises when the hypervisor is unreachable.
TempRemover = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class _HeldVm(Record):
    name: str
    operation_id: int | None


class OperationContext:
    """What a running operation uses to report progress and record temporary files."""

    def __init__(
        self,
        runner: OperationsRunner,
        op_id: int,
        kind: str,
        vm_id: int | None,
        vm_ids: list[int],
        created_by: str = "",
    ):
        self._runner = runner
        self.id = op_id
        self.kind = kind
        self.created_by = created_by
        self.started = time.monotonic()
        self.vm_id = vm_id
        self.vm_ids = vm_ids
        self.percent = 0.0
        self.message: str | Message = ""
        self._published_at = 0.0
        self._stored_at = 0.0
        self._flush: asyncio.TimerHandle | None = None
        self.temp_files: list[tuple[int, str]] = []

    async def progress(self, percent: float | None = None, message: str | Message | None = None) -> None:
        """Report progress; a :class:`Message` is shown in each reader's language."""
        if percent is not None:
            self.percent = max(0.0, min(100.0, float(percent)))
        if message is not None:
            self.message = message
        now = time.monotonic()
        if now - self._published_at >= PUBLISH_INTERVAL:
            self._publish()
        elif self._flush is None:
            delay = PUBLISH_INTERVAL - (now - self._published_at)
            self._flush = asyncio.get_running_loop().call_later(delay, self._publish)
        if now - self._stored_at >= STORE_INTERVAL:
            self._stored_at = now
            await self._runner.store(self.id, progress=self.percent, message=self.message)

    def _publish(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._published_at = time.monotonic()
        self._runner._publish(self, "running")

    def stop_publishing(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    async def temp_file(self, hypervisor_id: int, path: str) -> None:
        """Record ``path`` before creating it, so that a crash cannot leave it behind unnoticed."""
        self.temp_files.append((hypervisor_id, path))
        await self._runner.save_temp_files(self.id, self.temp_files)

    async def temp_file_done(self, path: str) -> None:
        """``path`` was renamed into place (or removed): nothing to clean up any more."""
        self.temp_files = [(hv, p) for hv, p in self.temp_files if p != path]
        await self._runner.save_temp_files(self.id, self.temp_files)

    async def release(self, vm_ids: Iterable[int]) -> None:
        """Stop holding ``vm_ids`` before the end: the operation leaves them alone."""
        ids = set(vm_ids)
        self.vm_ids = [vm_id for vm_id in self.vm_ids if vm_id not in ids]
        await self._runner._release(self.id, ids)


# The work of an operation; its final message (or None: the last progress message stays).
Work = Callable[[OperationContext], Awaitable[str | Message | None]]


class OperationsRunner:
    def __init__(
        self,
        db: Database,
        hub: LiveHub,
        *,
        remove_temp: TempRemover,
        listeners: Sequence[OperationListener] = (),
        replica: str = "",
        clustered: bool = False,
    ) -> None:
        self.db = db
        self.hub = hub
        self.temp_remover = remove_temp
        self.listeners = Observers("operation", listeners)
        # The replica whose operations these are (written in each row).
        self.replica = replica
        self.clustered = clustered
        self._leftovers = Leftovers(self)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._hold_lock = asyncio.Lock()
        self._stopping = False

    # -- queries -----------------------------------------------------------------------------

    async def get(self, op_id: int) -> Operation | None:
        return await fetch_record(self.db, Operation, operations.select().where(operations.c.id == op_id))

    async def recent(self, *, limit: int = 50, active_only: bool = False) -> list[Operation]:
        query = operations.select().order_by(operations.c.id.desc()).limit(limit)
        if active_only:
            query = query.where(operations.c.state.in_(ACTIVE_STATES))
        return await fetch_records(self.db, Operation, query)

    @property
    def running_count(self) -> int:
        return len(self._tasks)

    # -- start / wait -------------------------------------------------------------------------

    async def start(
        self,
        kind: str,
        work: Work,
        *,
        vm_id: int | None = None,
        hold: Iterable[int] = (),
        hypervisor_id: int | None = None,
        params: dict[str, Any] | None = None,
        created_by: str = "",
        message: str | Message = "",
    ) -> int:
        """Record the operation, hold its VMs and run ``work`` in the background; its id."""
        if self._stopping:
            raise VmError(_("the dashboard is stopping: try again in a moment"))
        held = sorted(set(hold) | ({vm_id} if vm_id is not None else set()))
        body = {**(params or {}), "vm_ids": held, TEMP_KEY: []}
        english, kept = stored(message)

        async def record_and_hold() -> int:
            # Written in one transaction: on Galera two replicas holding the same VM through two
            # nodes both write its row, and the second to certify runs again and finds it busy.
            async with transaction(self.db):
                if held:
                    rows = await fetch_records(
                        self.db,
                        _HeldVm,
                        sa.select(vms.c.name, vms.c.operation_id).where(vms.c.id.in_(held)).with_for_update(),
                    )
                    busy = sorted(row.name for row in rows if row.operation_id is not None)
                    if busy:
                        raise VmBusy(busy)
                new_id: int = await self.db.execute(
                    operations.insert().values(
                        kind=kind,
                        vm_id=vm_id,
                        hypervisor_id=hypervisor_id,
                        state="pending",
                        progress=0.0,
                        message=english,
                        message_i18n=kept,
                        error="",
                        params_json=json.dumps(body, default=str),
                        created_by=created_by,
                        created_at=utcnow(),
                        replica=self.replica,
                    )
                )
                if held:
                    await self.db.execute(vms.update().where(vms.c.id.in_(held)).values(operation_id=new_id))
                return new_id

        async with self._hold_lock:
            op_id = await retrying(record_and_hold, what=f"starting operation {kind}")
        context = OperationContext(self, op_id, kind, vm_id, held, created_by)
        context.message = message
        self._publish(context, "pending")
        task = asyncio.create_task(self._run(context, work), name=f"operation-{op_id}-{kind}")
        self._tasks[op_id] = task
        task.add_done_callback(functools.partial(self._forget, op_id))
        return op_id

    def _forget(self, op_id: int, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(op_id, None)

    async def wait(self, op_id: int) -> Operation:
        """Wait for the operation to end (tests and callers that need the outcome)."""
        task = self._tasks.get(op_id)
        if task is not None:
            await asyncio.shield(task)
        operation = await self.get(op_id)
        if operation is None:
            raise VmError(_("no operation {op_id}").format(op_id=op_id))
        return operation

    async def _run(self, context: OperationContext, work: Work) -> None:
        await self.store(context.id, state="running", started_at=utcnow())
        self._publish(context, "running")
        state, error, message = "succeeded", "", context.message
        try:
            final = await work(context)
            message = final if final is not None else context.message
            context.percent = 100.0
        except asyncio.CancelledError:
            state = "interrupted"
            message = await self._interrupted_message(context)
            await self._finish(context, state, message, "")
            raise
        except VmError as exc:
            state, error = "failed", str(exc)
        except Exception as exc:
            log.exception("operation %s (%s) failed", context.id, context.kind)
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        if state == "failed":
            message = context.message
            await self.remove_temp_files(context)
        await self._finish(context, state, message, error)

    async def _finish(
        self, context: OperationContext, state: str, message: str | Message, error: str
    ) -> None:
        context.stop_publishing()
        await self.store(
            context.id,
            state=state,
            progress=context.percent,
            message=message,
            error=error,
            finished_at=utcnow(),
        )
        await self.db.execute(vms.update().where(vms.c.operation_id == context.id).values(operation_id=None))
        context.message = message
        self._publish(context, state, error=error)
        self.listeners(
            FinishedOperation(
                id=context.id,
                kind=context.kind,
                vm_id=context.vm_id,
                state=state,
                seconds=time.monotonic() - context.started,
                error=error,
                created_by=context.created_by,
            )
        )

    async def _interrupted_message(self, context: OperationContext) -> Message:
        removed, left = await self.remove_temp_files(context)
        text = M_(
            "Interrupted at {percent} %: the dashboard stopped during this operation.",
            percent=round(context.percent),
        )
        if removed:
            text += M_("Temporary file removed: {paths}.", paths=", ".join(removed))
        if left:
            text += M_("Temporary file still to remove: {paths}.", paths=", ".join(left))
        return text

    async def remove_temp_files(self, context: OperationContext) -> tuple[list[str], list[str]]:
        removed, left = await self.remove_temp(context.id, context.temp_files)
        context.temp_files = left
        return removed, [path for _, path in left]

    async def remove_temp(
        self, op_id: int, temp_files: list[tuple[int, str]]
    ) -> tuple[list[str], list[tuple[int, str]]]:
        """Remove an operation's temporary files; (paths removed, (hypervisor, path) left), left saved."""
        removed: list[str] = []
        left: list[tuple[int, str]] = []
        for hypervisor_id, path in temp_files:
            try:
                await asyncio.wait_for(self.temp_remover(hypervisor_id, path), 30)
                removed.append(path)
            except (Exception, asyncio.CancelledError) as exc:
                log.warning("operation %s: could not remove %s: %s", op_id, path, exc)
                left.append((hypervisor_id, path))
        with contextlib.suppress(Exception):
            await self.save_temp_files(op_id, left)
        return removed, left

    # -- stop / recover -----------------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel running operations: each removes its temporary files and ends ``interrupted``."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    async def recover(self) -> list[int]:
        """Interrupt what a previous run left active (see :mod:`app.vms.leftovers`); their ids."""
        return await self._leftovers.recover()

    async def interrupt_gone(self, alive: set[str]) -> list[int]:
        """Interrupt the active operations of replicas that are gone (a background duty); their ids."""
        return await self._leftovers.interrupt_gone(alive)

    async def clean_up_for(self, hypervisor_id: int) -> list[str]:
        """Remove temporary files interrupted operations left on ``hypervisor_id``; the paths."""
        return await self._leftovers.clean_up_for(hypervisor_id)

    # -- storage and publishing ---------------------------------------------------------------

    async def store(self, op_id: int, **values: Any) -> None:
        """Update the row; a ``message`` is stored as English text and, if a :class:`Message`, kept
        beside it to be shown in each reader's language (plain text clears what was kept)."""
        if "message" in values:
            values["message"], values["message_i18n"] = stored(values["message"])
        await self.db.execute(operations.update().where(operations.c.id == op_id).values(**values))

    async def _release(self, op_id: int, vm_ids: set[int]) -> None:
        if vm_ids:
            await self.db.execute(
                vms.update()
                .where(vms.c.id.in_(sorted(vm_ids)), vms.c.operation_id == op_id)
                .values(operation_id=None)
            )

    async def save_temp_files(self, op_id: int, temp_files: list[tuple[int, str]]) -> None:
        operation = await self.get(op_id)
        if operation is None:
            return
        params = operation.params
        params[TEMP_KEY] = [[hv, path] for hv, path in temp_files]
        await self.store(op_id, params_json=json.dumps(params, default=str))

    def _publish(self, context: OperationContext, state: str, *, error: str = "") -> None:
        self.hub.publish(
            "operation",
            {
                "id": context.id,
                "kind": context.kind,
                "vm_id": context.vm_id,
                "vm_ids": context.vm_ids,
                "state": state,
                "progress": round(context.percent, 1),
                **live_fields("message", context.message),
                "error": error,
            },
        )
