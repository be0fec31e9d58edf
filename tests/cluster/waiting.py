"""Waiting for a condition in cluster tests (never for a fixed time).

Unlike :func:`tests.waiting.eventually`, the interval stays as given: some cluster tests
must catch a short window (qemu-img writing its temporary file) and poll it tightly.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def until(  # an awaitable answer is awaited
    condition: Callable[[], Awaitable[T | None]], what: str, *, within: float = ..., every: float = ...
) -> T: ...
@overload
async def until(
    condition: Callable[[], T | None], what: str, *, within: float = ..., every: float = ...
) -> T: ...
async def until(condition: Callable[[], Any], what: str, *, within: float = 30, every: float = 0.05) -> Any:
    """The first truthy value of ``condition()`` (plain or async), polled until ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s")
        await asyncio.sleep(every)
