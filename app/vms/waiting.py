"""Waiting for a domain state: workflows wait, the state sync resolves.

:meth:`StateWaiters.wait_for` lets workflows wait for a domain state (populate
waits for each first boot to end) on events, with a slow re-check as backstop;
the state sync calls :meth:`StateWaiters.resolve` for every state it stores.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from app.hyper import Hypervisor, HypervisorError

# The hypervisor layer's domain states are the VM states, except that a domain that no
# longer exists ("undefined") is a VM whose domain is missing.
_RENAMED = {"undefined": "missing"}

Waiter = tuple[frozenset[str], "asyncio.Future[str]"]


def state_after(domain_state: str) -> str:
    """The VM state for a domain state reported by the hypervisor layer."""
    return _RENAMED.get(domain_state, domain_state or "unknown")


class StateWaiters:
    def __init__(self) -> None:
        self._waiters: dict[tuple[int, str], list[Waiter]] = defaultdict(list)

    def resolve(self, hypervisor_id: int, name: str, state: str) -> None:
        """The domain is now in ``state``: wake whoever waits for it."""
        waiters = self._waiters.get((hypervisor_id, name))
        if not waiters:
            return
        for states, future in list(waiters):
            if state in states and not future.done():
                future.set_result(state)

    def cancel_all(self) -> None:
        for waiters in self._waiters.values():
            for _, future in waiters:
                future.cancel()

    async def wait_for(
        self,
        hypervisor_id: int,
        name: str,
        states: Iterable[str],
        *,
        within: float,
        hv: Hypervisor | None = None,
        recheck: float = 2.0,
    ) -> str | None:
        """Wait until the domain reaches one of ``states``; the state, or None after ``within`` s.

        Events resolve the wait; with ``hv`` the state is also re-read every ``recheck``
        seconds, so a lost event costs a little time, never the whole timeout.
        """
        wanted = frozenset(states)
        key = (hypervisor_id, name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._waiters[key].append((wanted, future))
        deadline = loop.time() + within
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                if hv is not None:
                    try:
                        current: str | None = state_after(await hv.domain_state(name))
                    except HypervisorError:
                        current = None
                    if current in wanted:
                        return current
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(remaining, recheck))
                except TimeoutError:
                    continue
        finally:
            waiters = self._waiters.get(key, [])
            waiters[:] = [(s, f) for s, f in waiters if f is not future]
            if not waiters:
                self._waiters.pop(key, None)
            if not future.done():
                future.cancel()
