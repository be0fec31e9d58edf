"""What the broker needs from the hypervisor layer and the console service.

These mirror the contracts in docs/architecture.md (``app.hyper`` and
``app.proxy``); the broker is written against them, not against the classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class DesktopHost(Protocol):
    """One hypervisor (``registry.get(id)``)."""

    state: str

    async def start(self, name: str) -> None: ...
    async def shutdown(self, name: str) -> None: ...
    async def destroy(self, name: str) -> None: ...
    async def reboot(self, name: str) -> None: ...
    async def domain_state(self, name: str) -> str: ...
    async def spice_endpoint(self, name: str) -> tuple[str, int]: ...


class HostRegistry(Protocol):
    def get(self, hypervisor_id: int) -> DesktopHost: ...


class ConsoleGrant(Protocol):
    ticket: str
    password: str
    host: str
    port: int
    proxy_url: str


class Consoles(Protocol):
    async def open(self, *, user_id: int, vm_id: int, client_address: str) -> ConsoleGrant: ...
    async def revoke_for_vm(self, vm_id: int, reason: str) -> None: ...
    async def revoke_for_user(self, user_id: int, reason: str) -> None: ...


class VVBuilder(Protocol):
    def __call__(self, grant: ConsoleGrant, *, title: str) -> str: ...


class Clock(Protocol):
    def __call__(self) -> datetime: ...
