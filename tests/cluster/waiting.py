"""Waiting for a condition in cluster tests (never for a fixed time): :func:`tests.waiting.eventually`.

The interval stays as given instead of growing: some cluster tests must catch a short window
(qemu-img writing its temporary file) and poll it tightly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from tests.waiting import eventually

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
    """The first truthy value of ``condition()`` (plain or async), polled every ``every`` s."""
    return await eventually(condition, what, timeout=within, interval=every, ceiling=every)
