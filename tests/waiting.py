"""Waiting for a condition, the one way tests do it.

A test that waits for a real service (a record written after a socket closes, a
domain reaching a state, a process gone) asks :func:`eventually` to look again
until the answer is there, within a generous bound, and never sleeps for a fixed
time: on a loaded machine everything is slower, and a fixed sleep is either too
short (a flaky test) or too long (a slow suite). Time that the dashboard decides
by (sessions, tickets, leases) is moved with the test clock instead
(:mod:`tests.clock`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

# A bound for conditions that normally hold within a second: generous for a loaded 2-core machine.
GENEROUS = 60.0

T = TypeVar("T")


class NeverHappened(AssertionError):
    """The condition did not hold within the bound."""


@overload
async def eventually(  # an awaitable answer is awaited
    check: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    timeout: float = ...,
    interval: float = ...,
    ceiling: float = ...,
) -> T: ...
@overload
async def eventually(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float = ...,
    interval: float = ...,
    ceiling: float = ...,
) -> T: ...
async def eventually(
    check: Callable[[], Any],
    what: str,
    *,
    timeout: float = GENEROUS,
    interval: float = 0.02,
    ceiling: float = 0.25,
) -> Any:
    """Call ``check`` (plain or async) until it returns something true, and return that.

    It looks at once, then again after ``interval`` seconds, growing to ``ceiling`` (a
    quarter of a second; a check that must catch a short window keeps it at ``interval``).
    Exceptions from ``check`` are not swallowed: a check that breaks is a failure, not
    "not yet". After ``timeout`` seconds it fails, naming ``what`` was awaited and the
    last answer.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        answer = check()
        result = await answer if inspect.isawaitable(answer) else answer
        if result:
            return result
        if loop.time() >= deadline:
            raise NeverHappened(f"{what}: not after {timeout:g} s (last answer: {result!r})")
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, max(ceiling, interval))


def eventually_blocking(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float = GENEROUS,
    interval: float = 0.02,
    ceiling: float = 0.25,
) -> T:
    """:func:`eventually` for code without an event loop (a helper thread, a synchronous fixture)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise NeverHappened(f"{what}: not after {timeout:g} s (last answer: {result!r})")
        time.sleep(interval)
        interval = min(interval * 1.5, max(ceiling, interval))
