"""The tests' one way of waiting: look again until the condition holds, within a bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.waiting import NeverHappened, eventually, eventually_blocking


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


async def test_eventually_looks_ever_less_often_up_to_its_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(seconds: float) -> None:
        pauses.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    answers = iter([0] * 12 + [1])
    await eventually(lambda: next(answers), "the thirteenth look")
    assert pauses[0] == 0.02 and pauses == sorted(pauses) and pauses[-1] == 0.25
    pauses.clear()
    answers = iter([0] * 12 + [1])
    await eventually(lambda: next(answers), "a short window", interval=0.01, ceiling=0.01)
    assert pauses == [0.01] * 12


def test_the_blocking_twin_keeps_a_tight_interval_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    answers = iter([0] * 5 + [1])
    assert eventually_blocking(lambda: next(answers), "the sixth look", interval=0.05, ceiling=0.05) == 1
    assert pauses == [0.05] * 5
