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
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.records import Named, Record, fetch_record, fetch_records
from app.db.schema import operations, vms
from app.i18n import gettext as _
from app.live.hub import LiveHub
from app.observers import Observers
from app.vms.errors import Refused, VmError

log = logging.getLogger("kvmvdi.operations")

PUBLISH_INTERVAL = 0.2  # at most 5 progress messages a second
STORE_INTERVAL = 1.0
ACTIVE_STATES = ("pending", "running")
TEMP_KEY = "_temp_files"

# (hypervisor_id, path) -> removes the file; raises when the hypervisor is unreachable.
TempRemover = Callable[[int, str], Awaitable[None]]


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
    message: str
    error: str
    params_json: str
    created_by: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = json.loads(self.params_json or "{}")
        return params

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
            "message": self.message,
            "error": self.error,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


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
        self.message = ""
        self._published_at = 0.0
        self._stored_at = 0.0
        self._flush: asyncio.TimerHandle | None = None
        self.temp_files: list[tuple[int, str]] = []

    async def progress(self, percent: float | None = None, message: str | None = None) -> None:
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
            await self._runner._store(self.id, progress=self.percent, message=self.message)

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
        await self._runner._save_temp_files(self.id, self.temp_files)

    async def temp_file_done(self, path: str) -> None:
        """``path`` was renamed into place (or removed): nothing to clean up any more."""
        self.temp_files = [(hv, p) for hv, p in self.temp_files if p != path]
        await self._runner._save_temp_files(self.id, self.temp_files)

    async def release(self, vm_ids: Iterable[int]) -> None:
        """Stop holding ``vm_ids`` before the end: the operation leaves them alone."""
        ids = set(vm_ids)
        self.vm_ids = [vm_id for vm_id in self.vm_ids if vm_id not in ids]
        await self._runner._release(self.id, ids)


Work = Callable[[OperationContext], Awaitable[str | None]]


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


class OperationsRunner:
    def __init__(
        self,
        db: Database,
        hub: LiveHub,
        *,
        remove_temp: TempRemover,
        listeners: Sequence[OperationListener] = (),
    ) -> None:
        self._db = db
        self._hub = hub
        self._remove_temp = remove_temp
        self._listeners = Observers("operation", listeners)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._hold_lock = asyncio.Lock()
        self._stopping = False

    # -- queries -----------------------------------------------------------------------------

    async def get(self, op_id: int) -> Operation | None:
        return await fetch_record(self._db, Operation, operations.select().where(operations.c.id == op_id))

    async def recent(self, *, limit: int = 50, active_only: bool = False) -> list[Operation]:
        query = operations.select().order_by(operations.c.id.desc()).limit(limit)
        if active_only:
            query = query.where(operations.c.state.in_(ACTIVE_STATES))
        return await fetch_records(self._db, Operation, query)

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
        message: str = "",
    ) -> int:
        """Record the operation, hold its VMs and run ``work`` in the background; its id."""
        if self._stopping:
            raise VmError(_("the dashboard is stopping: try again in a moment"))
        held = sorted(set(hold) | ({vm_id} if vm_id is not None else set()))
        body = {**(params or {}), "vm_ids": held, TEMP_KEY: []}
        async with self._hold_lock:
            if held:
                busy = await fetch_records(
                    self._db,
                    Named,
                    sa.select(vms.c.name).where(vms.c.id.in_(held), vms.c.operation_id.is_not(None)),
                )
                if busy:
                    raise VmBusy(sorted(row.name for row in busy))
            op_id: int = await self._db.execute(
                operations.insert().values(
                    kind=kind,
                    vm_id=vm_id,
                    hypervisor_id=hypervisor_id,
                    state="pending",
                    progress=0.0,
                    message=message,
                    error="",
                    params_json=json.dumps(body, default=str),
                    created_by=created_by,
                    created_at=utcnow(),
                )
            )
            if held:
                await self._db.execute(vms.update().where(vms.c.id.in_(held)).values(operation_id=op_id))
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
        await self._store(context.id, state="running", started_at=utcnow())
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
            await self._remove_temp_files(context)
        await self._finish(context, state, message, error)

    async def _finish(self, context: OperationContext, state: str, message: str, error: str) -> None:
        context.stop_publishing()
        await self._store(
            context.id,
            state=state,
            progress=context.percent,
            message=message,
            error=error,
            finished_at=utcnow(),
        )
        await self._db.execute(vms.update().where(vms.c.operation_id == context.id).values(operation_id=None))
        context.message = message
        self._publish(context, state, error=error)
        self._listeners(
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

    async def _interrupted_message(self, context: OperationContext) -> str:
        removed, left = await self._remove_temp_files(context)
        text = f"Interrupted at {context.percent:.0f} %: the dashboard stopped during this operation."
        if removed:
            text += " Temporary file removed: " + ", ".join(removed) + "."
        if left:
            text += " Temporary file still to remove: " + ", ".join(left) + "."
        return text

    async def _remove_temp_files(self, context: OperationContext) -> tuple[list[str], list[str]]:
        removed: list[str] = []
        left: list[tuple[int, str]] = []
        for hypervisor_id, path in context.temp_files:
            try:
                await asyncio.wait_for(self._remove_temp(hypervisor_id, path), 30)
                removed.append(path)
            except (Exception, asyncio.CancelledError) as exc:
                log.warning("operation %s: could not remove %s: %s", context.id, path, exc)
                left.append((hypervisor_id, path))
        context.temp_files = left
        with contextlib.suppress(Exception):
            await self._save_temp_files(context.id, left)
        return removed, [path for _, path in left]

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
        """Mark operations a previous dashboard left active as ``interrupted``; their ids.

        Their temporary files are removed now if possible, else by :meth:`clean_up_for`
        when their hypervisor connects.
        """
        active = await fetch_records(
            self._db, Operation, operations.select().where(operations.c.state.in_(ACTIVE_STATES))
        )
        ids: list[int] = []
        for operation in active:
            temp = [(int(hv), str(path)) for hv, path in operation.params.get(TEMP_KEY, [])]
            text = (
                f"Interrupted at {operation.progress:.0f} %: the dashboard stopped during this operation"
                " and did not resume it."
            )
            if temp:
                text += " Temporary file to remove: " + ", ".join(path for _, path in temp) + "."
            await self._store(operation.id, state="interrupted", message=text, finished_at=utcnow())
            release = vms.update().where(vms.c.operation_id == operation.id).values(operation_id=None)
            await self._db.execute(release)
            ids.append(operation.id)
            log.warning("operation %s (%s) was interrupted by a dashboard stop", operation.id, operation.kind)
        return ids

    async def clean_up_for(self, hypervisor_id: int) -> list[str]:
        """Remove temporary files that interrupted operations left on ``hypervisor_id``; the paths."""
        ended = await fetch_records(
            self._db, Operation, operations.select().where(operations.c.state.in_(("interrupted", "failed")))
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
                    await self._remove_temp(hv, path)
                    done.append(path)
                except Exception as exc:
                    log.warning("operation %s: could not remove %s: %s", operation.id, path, exc)
                    left.append((hv, path))
            if done:
                message = operation.message.split(" Temporary file to remove:")[0]
                message += " Temporary file removed: " + ", ".join(done) + "."
                if left:
                    message += " Temporary file to remove: " + ", ".join(p for _, p in left) + "."
                await self._store(operation.id, message=message)
                await self._save_temp_files(operation.id, left)
                removed.extend(done)
                self._hub.publish("operation", {**operation.summary(), "message": message})
        return removed

    # -- storage and publishing ---------------------------------------------------------------

    async def _store(self, op_id: int, **values: Any) -> None:
        await self._db.execute(operations.update().where(operations.c.id == op_id).values(**values))

    async def _release(self, op_id: int, vm_ids: set[int]) -> None:
        if vm_ids:
            await self._db.execute(
                vms.update()
                .where(vms.c.id.in_(sorted(vm_ids)), vms.c.operation_id == op_id)
                .values(operation_id=None)
            )

    async def _save_temp_files(self, op_id: int, temp_files: list[tuple[int, str]]) -> None:
        operation = await self.get(op_id)
        if operation is None:
            return
        params = operation.params
        params[TEMP_KEY] = [[hv, path] for hv, path in temp_files]
        await self._store(op_id, params_json=json.dumps(params, default=str))

    def _publish(self, context: OperationContext, state: str, *, error: str = "") -> None:
        self._hub.publish(
            "operation",
            {
                "id": context.id,
                "kind": context.kind,
                "vm_id": context.vm_id,
                "vm_ids": context.vm_ids,
                "state": state,
                "progress": round(context.percent, 1),
                "message": context.message,
                "error": error,
            },
        )
