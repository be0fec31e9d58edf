"""Argon2 off the event loop, a bounded number at once, on CPU nothing else wants.

Verifying a password costs tens of milliseconds of CPU and 64 MiB by design; on
the event loop a log-in storm would stall every console stream of the process.
Here each check runs on one of ``security.argon2_workers`` workers. On Linux a
check first runs in the idle scheduling class (``SCHED_IDLE``): any other task
that wakes up, the event loop above all, takes the core at once. Renicing alone
does not do that: a reniced Argon2 lane keeps its core until its time slice
ends, and ``bench/login_storm.py`` measured console round trips 20x slower at
p99 during a storm that way, against 1.4x in the idle class. So that a busy host
cannot starve log-ins, a check still running after
``security.argon2_idle_seconds`` moves to the normal class, reniced by
``security.argon2_worker_nice``; a process that may not move back (an unprivileged
user without ``LimitNICE``) skips the idle class and runs its checks reniced.
Threads by default: Argon2's C code runs without the GIL, they start at once and
cost nothing idle. Processes on request
(``argon2_worker_kind = "process"``): separate interpreters, started with
``spawn`` (the embedding program's main module must be import-safe). At most one check per
worker runs at a time; up to ``security.password_queue`` more wait their turn
without cost, and beyond that a log-in is refused at once as "busy" rather than
queued without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Literal, TypeVar

from app.auth import passwords

log = logging.getLogger("kvmvdi.auth")

T = TypeVar("T")
WorkerKind = Literal["process", "thread"]


class PasswordCheckBusy(Exception):
    """Too many password checks are waiting: try again in a moment."""


def _lower_priority(nice: int) -> None:
    """Worker start-up: renice this process or thread (Linux: nice is per thread)."""
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))


def _set_idle_class(tid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))


def _leave_idle_class() -> None:
    """Move every idle-class thread of this process (the check's Argon2 lanes) to the normal class.

    libargon2 starts its lane threads for each check, and they inherit the class of the
    worker that started them, so the worker alone is not enough. Only password workers
    put themselves in the idle class; their nice value is kept.
    """
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError, ValueError):
            tid = int(task)
            if os.sched_getscheduler(tid) == os.SCHED_IDLE:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))


def idle_class_can_be_left(nice: int) -> bool:
    """Whether a worker reniced by ``nice`` may move from the idle class back to the normal one.

    Linux lets a thread leave ``SCHED_IDLE`` only within its ``RLIMIT_NICE`` (systemd's
    ``LimitNICE=``) or with ``CAP_SYS_NICE``. Without either, a check that entered the idle
    class would stay there however busy the host, so checks must not enter it. Tried on a
    thread of its own, as a worker would do it.
    """
    if not hasattr(os, "SCHED_IDLE"):
        return False
    answers: list[bool] = []

    def probe() -> None:
        _lower_priority(nice)
        tid = threading.get_native_id()
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            answers.append(False)
        else:
            answers.append(True)

    thread = threading.Thread(target=probe, name="argon2-probe")
    thread.start()
    thread.join()
    return answers == [True]


def run_check(idle_seconds: float, function: Callable[..., T], *args: str) -> T:
    """On a worker: run ``function`` in the idle class for up to ``idle_seconds``, then normally."""
    if idle_seconds <= 0 or not hasattr(os, "SCHED_IDLE"):
        return function(*args)
    _set_idle_class(threading.get_native_id())
    timer = threading.Timer(idle_seconds, _leave_idle_class)
    timer.daemon = True
    timer.start()
    try:
        return function(*args)
    finally:
        timer.cancel()


class PasswordWorkers:
    def __init__(
        self,
        *,
        workers: int,
        queue: int,
        kind: WorkerKind = "thread",
        nice: int = 10,
        idle_seconds: float = 2.0,
    ) -> None:
        self.workers = workers
        self.queue = queue
        self.kind = kind
        self.nice = nice
        self.idle_seconds = idle_seconds
        # What checks use: 0 when this process could not leave the idle class again (see start()).
        self._idle_seconds = idle_seconds
        self._slots = asyncio.Semaphore(workers)
        self._waiting = 0
        self._executor: Executor | None = None
        self._dummy_hash = ""

    def _new_executor(self) -> Executor:
        if self.kind == "thread":
            return ThreadPoolExecutor(
                self.workers, thread_name_prefix="argon2", initializer=_lower_priority, initargs=(self.nice,)
            )
        # Not fork: the dashboard runs threads (database drivers, libvirt) that a fork would copy mid-work.
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lower_priority,
            initargs=(self.nice,),
        )

    async def start(self) -> None:
        if self.idle_seconds > 0 and not await asyncio.to_thread(idle_class_can_be_left, self.nice):
            log.warning(
                "password checks skip the idle CPU class: this process may not leave it again "
                "(allow it with systemd's LimitNICE=+0 or CAP_SYS_NICE)"
            )
            self._idle_seconds = 0
        self._executor = self._new_executor()

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; a missing hash costs as much as a real check."""
        if not password:
            return False
        if not password_hash:
            # Unknown user names cost the same as known ones: a check against a hash of nothing.
            if not self._dummy_hash:
                self._dummy_hash = await self.hash(passwords.generate_password())
            await self._run(passwords.verify_password, self._dummy_hash, password)
            return False
        return await self._run(passwords.verify_password, password_hash, password)

    async def hash(self, password: str) -> str:
        return await self._run(passwords.hash_password, password)

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        if self._waiting >= self.workers + self.queue:
            raise PasswordCheckBusy("too many password checks are waiting")
        self._waiting += 1
        try:
            async with self._slots:
                executor = self._executor
                if executor is None:
                    raise PasswordCheckBusy("the password workers are not running")
                loop = asyncio.get_running_loop()
                try:
                    result: T = await loop.run_in_executor(
                        executor, run_check, self._idle_seconds, function, *args
                    )
                except BrokenProcessPool as exc:
                    # A worker died (killed, out of memory): start fresh ones for the next check.
                    log.error("a password worker died; starting new ones")
                    if self._executor is executor:
                        self._executor = self._new_executor()
                        executor.shutdown(wait=False)
                    raise PasswordCheckBusy("a password worker died") from exc
                return result
        finally:
            self._waiting -= 1
