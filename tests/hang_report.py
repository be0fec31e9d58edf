"""A test phase (set-up, call or tear-down) that nears pytest-timeout's limit prints where every
thread and every asyncio task is waiting, before the timeout ends it.

pytest-timeout's own report shows only the main thread, which for an async test is the event
loop's ``select``: it says nothing about which task hangs, or on what.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import sys
import threading
from collections.abc import Generator

import pytest

# Seconds before the time limit at which the report is printed (a third of short limits).
AHEAD = 20.0


def _print_tasks() -> None:
    for task in asyncio.all_tasks():
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def _report(what: str) -> None:
    print(f"\n===== {what} is close to its time limit: threads and tasks =====", file=sys.stderr)
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    # The loops are found rather than remembered: a fixture doing that would have to pick a loop scope.
    for loop in [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]:
        if loop.is_running():
            loop.call_soon_threadsafe(_print_tasks)


def _limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    try:
        return float(item.config.getini("timeout") or 0)
    except (ValueError, KeyError):
        return 0.0


def _watched(item: pytest.Item, phase: str) -> Generator[None, object, object]:
    limit = _limit(item)
    timer = None
    if limit > 0:
        ahead = min(AHEAD, limit / 3)
        timer = threading.Timer(limit - ahead, _report, args=(f"{item.nodeid} ({phase})",))
        timer.daemon = True
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _watched(item, "set-up"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _watched(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _watched(item, "tear-down"))
