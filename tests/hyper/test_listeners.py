"""Listeners of the hypervisor layer: called in order, one failing never stops the others."""

from __future__ import annotations

from app.hyper.events import Listeners


async def test_listeners_run_in_registration_order_and_first_goes_before_all() -> None:
    calls: list[str] = []
    listeners: Listeners[int] = Listeners("test")
    listeners.add(lambda item: calls.append(f"a{item}"))

    async def b(item: int) -> None:
        calls.append(f"b{item}")

    listeners.add(b)
    listeners.add(lambda item: calls.append(f"first{item}"), first=True)
    await listeners.emit(1)
    assert calls == ["first1", "a1", "b1"]


async def test_a_failing_listener_does_not_stop_the_others_and_removal_stops_calls() -> None:
    calls: list[int] = []
    listeners: Listeners[int] = Listeners("test")

    def broken(item: int) -> None:
        raise RuntimeError("listener bug")

    listeners.add(broken)
    remove = listeners.add(calls.append)
    await listeners.emit(1)
    remove()
    await listeners.emit(2)
    assert calls == [1]
