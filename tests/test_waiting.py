"""The tests' one way of waiting: look again until the condition holds, within a bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.waiting import NeverHappened, eventually


async def test_eventually_returns_the_first_true_answer() -> None:
    answers = iter([None, [], ["record"]])
    assert await eventually(lambda: next(answers), "a record") == ["record"]


async def test_eventually_awaits_an_async_check() -> None:
    calls = 0

    async def check() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return calls if calls >= 3 else 0

    assert await eventually(check, "three looks") == 3


async def test_eventually_fails_naming_what_it_waited_for_and_the_last_answer() -> None:
    started = time.monotonic()
    with pytest.raises(NeverHappened, match=r"the session's record: not after 0.3 s \(last answer: \[\]\)"):
        await eventually(lambda: [], "the session's record", timeout=0.3)
    assert time.monotonic() - started >= 0.3


async def test_a_check_that_breaks_is_a_failure_not_a_wait() -> None:
    def broken() -> bool:
        raise KeyError("no such record")

    with pytest.raises(KeyError):
        await eventually(broken, "a record")
