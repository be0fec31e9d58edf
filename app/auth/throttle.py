"""Log-in throttling: failures counted per user name and per client address, then 429.

Two keys count separately. The user name (case-insensitive) allows few failures
(``security.login_max_failures``): it protects one account from guessing, from
however many addresses. The address allows many more
(``security.login_max_failures_per_address``), so that a classroom behind one
NAT address survives its typos while one address guessing many names is still
stopped. IPv6 clients are counted per /64, the smallest network a site is
usually given, so hopping between addresses of one network gains nothing.
Addresses in ``security.login_trusted_networks`` (a NAT gateway, a reverse proxy
that does not forward client addresses) are counted by user name only.

Every attempt is counted before anything about it is checked (see
:mod:`app.auth.throttle_store`): parallel attempts at one user name each take one
of its places, and those that find no place *wait* until an earlier one is
settled, then look again. A burst of fifty guesses therefore gets five checked and
forty-five refusals, while fifty thin clients logging in with one shared kiosk
account at the same moment all get in, one after another. The address key lets
attempts in through its check until failures are settled, so that a NAT's morning
log-in storm is never refused for being many; failures then count as usual. A
successful log-in clears its user name's failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from app.auth.throttle_store import Acquired, Limit, ThrottleStore

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPV6_PREFIX = 64


def address_key(address: str) -> str:
    """The throttle key of a client address: IPv4 as is, IPv6 by its /64, anything else verbatim."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return f"addr:{address[:64]}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address):
        return f"addr:{ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False)}"
    return f"addr:{ip}"


def user_key(username: str) -> str:
    return f"user:{username.casefold()}"


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class Turns:
    """Wakes the attempts waiting at a user name when an attempt there is settled.

    Settles of other dashboards sharing the store are not seen here: waiters also
    look again every ``POLL`` seconds.
    """

    POLL = 0.5

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}

    async def wait(self, key: str) -> None:
        event = self._events.setdefault(key, asyncio.Event())
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.POLL)
        finally:
            self._waiters[key] -= 1
            if not self._waiters[key]:
                del self._waiters[key]
                if self._events.get(key) is event:
                    del self._events[key]

    def settled(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()


@dataclass
class Admission:
    """One admitted attempt; settle it exactly once."""

    store: ThrottleStore
    acquired: Acquired
    user: str
    turns: Turns
    settled: bool = False

    async def failed(self) -> None:
        await self._settle(failed=True)

    async def succeeded(self) -> None:
        await self._settle(failed=False, clear=True)

    async def withdrawn(self) -> None:
        """Not the client's fault (the directory was unreachable, the server busy): not counted."""
        await self._settle(failed=False)

    async def _settle(self, *, failed: bool, clear: bool = False) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            await self.store.settle(self.acquired, failed=failed)
            if clear:
                await self.store.clear(self.user)
        finally:
            self.turns.settled(self.user)


@dataclass(frozen=True)
class Throttled:
    retry_after: int


class LoginThrottle:
    def __init__(
        self,
        store: ThrottleStore,
        *,
        max_failures: int,
        max_failures_per_address: int,
        window: float,
        trusted_networks: tuple[Network, ...] = (),
        max_wait: float = 60.0,
    ) -> None:
        self.store = store
        # How long an attempt waits for a place at its user name before it is refused.
        self.max_wait = max_wait
        self.turns = Turns()
        self.max_failures = max_failures
        self.max_failures_per_address = max_failures_per_address
        self.window = window
        self.trusted_networks = trusted_networks

    async def admit(self, *, username: str, address: str) -> Admission | Throttled:
        """Count this attempt now, or say how long to wait (whole seconds, at least 1)."""
        limits = [Limit(user_key(username), self.max_failures, count_pending=True)]
        if not _trusted(address, self.trusted_networks):
            limits.append(Limit(address_key(address), self.max_failures_per_address, count_pending=False))
        user = user_key(username)
        deadline = time.monotonic() + self.max_wait
        while True:
            outcome = await self.store.acquire(limits, window=self.window)
            if isinstance(outcome, Acquired):
                return Admission(self.store, outcome, user, self.turns)
            if not outcome.pending or time.monotonic() >= deadline:
                return Throttled(retry_after=max(1, math.ceil(outcome.retry_after)))
            await self.turns.wait(user)
