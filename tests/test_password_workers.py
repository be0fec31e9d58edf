"""Argon2 runs on workers in the idle CPU class, then reniced; a bounded number at once; beyond that, busy."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.auth.hashing import PasswordCheckBusy, PasswordWorkers, idle_class_can_be_left
from app.auth.passwords import hash_password, needs_rehash
from tests.waiting import eventually_blocking

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
STORED = hash_password(PASSWORD)


@pytest.fixture
async def workers() -> AsyncIterator[PasswordWorkers]:
    pool = PasswordWorkers(workers=1, queue=1, kind="thread", nice=10)
    await pool.start()
    yield pool
    await pool.stop()


def _thread_nice_values() -> list[int]:
    values = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/stat") as stat:
            values.append(int(stat.read().rsplit(")", 1)[1].split()[16]))
    return values


async def test_a_check_runs_on_a_worker_thread_at_a_lower_priority(workers: PasswordWorkers) -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    assert await workers.verify(STORED, PASSWORD)
    assert not await workers.verify(STORED, PASSWORD + "!")
    assert before + 10 in _thread_nice_values() or 19 in _thread_nice_values(), "a reniced worker thread"
    assert os.getpriority(os.PRIO_PROCESS, 0) == before, "the event loop's thread keeps its priority"


def _scheduling_class() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _scheduling_class_once_promoted() -> tuple[int, int]:
    """Wait (on the worker) until the check has been moved out of the idle class."""
    eventually_blocking(
        lambda: os.sched_getscheduler(0) != os.SCHED_IDLE, "the check out of the idle class", interval=0.01
    )
    return _scheduling_class()


# Root, or a user whose RLIMIT_NICE lets a thread reniced by 10 go back to the normal class. CI runs
# as root: there the idle class is always tested; a contributor's own account usually may not.
may_leave_the_idle_class = pytest.mark.skipif(
    not idle_class_can_be_left(10) and os.environ.get("CI") != "true",
    reason="this user may not leave Linux's idle CPU class (not root, RLIMIT_NICE below 10)",
)

CHILD = """
import asyncio, os, resource
resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
from app.auth.hashing import PasswordWorkers

async def main() -> None:
    pool = PasswordWorkers(workers=1, queue=1, kind="thread", nice=10, idle_seconds=0.05)
    await pool.start()
    try:
        print(await pool._run(lambda: os.sched_getscheduler(0)))
    finally:
        await pool.stop()

asyncio.run(main())
"""


def test_a_process_that_may_not_leave_the_idle_class_runs_its_checks_reniced_outside_it() -> None:
    """Not root and no LimitNICE: a check in the idle class would stay there on a busy host."""
    # As root, the child also gives up CAP_SYS_NICE (its bounding set), which would let it leave.
    drop = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"] if os.geteuid() == 0 else []
    child = subprocess.run(
        [*drop, sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60, cwd=REPO
    )
    assert int(child.stdout) == os.SCHED_OTHER, child.stdout
    assert "skip the idle CPU class" in child.stderr, "the log says why"


@may_leave_the_idle_class
async def test_a_check_runs_in_the_idle_cpu_class_so_the_event_loop_gets_a_core_first(
    workers: PasswordWorkers,
) -> None:
    policy, _ = await workers._run(_scheduling_class)
    assert policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the event loop's thread stays in the normal class"


@may_leave_the_idle_class
async def test_a_check_the_busy_host_keeps_waiting_goes_on_in_the_normal_class_reniced() -> None:
    pool = PasswordWorkers(workers=1, queue=1, kind="thread", nice=10, idle_seconds=0.05)
    await pool.start()
    try:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        policy, nice = await pool._run(_scheduling_class_once_promoted)
        assert policy == os.SCHED_OTHER
        assert nice == min(19, before + 10), "still reniced"
        assert await pool.verify(STORED, PASSWORD)
    finally:
        await pool.stop()


async def test_beyond_the_queue_a_check_is_refused_at_once(workers: PasswordWorkers) -> None:
    running = asyncio.ensure_future(workers.verify(STORED, PASSWORD))
    waiting = asyncio.ensure_future(workers.verify(STORED, PASSWORD))
    await asyncio.sleep(0)  # both have taken their places (one on the worker, one in the queue)
    with pytest.raises(PasswordCheckBusy):
        await workers.verify(STORED, PASSWORD)
    assert await asyncio.gather(running, waiting) == [True, True]
    assert await workers.verify(STORED, PASSWORD), "room again"


async def test_an_unknown_user_costs_a_check_too(workers: PasswordWorkers) -> None:
    assert not await workers.verify(None, PASSWORD)
    assert not await workers.verify("", PASSWORD)
    assert not await workers.verify(STORED, "")


@pytest.mark.slow  # starts a pool of worker processes
async def test_worker_processes_check_and_hash_as_well() -> None:
    pool = PasswordWorkers(workers=1, queue=4, kind="process", nice=5)
    await pool.start()
    try:
        fresh = await pool.hash(PASSWORD)
        assert fresh.startswith("$argon2id$") and not needs_rehash(fresh)
        assert await pool.verify(fresh, PASSWORD)
        assert not await pool.verify(fresh, "not it at all")
    finally:
        await pool.stop()
