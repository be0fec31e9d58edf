"""The server ``kvm-vdi serve`` runs: uvicorn, with a graceful drain on SIGTERM for replicas.

uvicorn alone stops accepting connections at the first SIGTERM, so a load balancer that
has not noticed yet sends requests into a closed port. A replica of a cluster first
drains (:meth:`app.cluster.node.ClusterNode.drain`: readiness down, still serving for
``cluster.drain_grace``, consoles and live pages told to reconnect), then lets uvicorn
stop as usual, waiting up to ``cluster.drain_timeout`` for requests in progress. A
second signal stops at once. One process (no cluster) stops as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

log = logging.getLogger("kvmvdi.cluster")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain: Callable[[], Awaitable[None] | None]) -> None:
        super().__init__(config)
        # Returns the drain to run, or None when there is nothing to drain (one process).
        self._drain = drain
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drainer: asyncio.Future[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if (
            self._draining
            or self.should_exit
            or self._loop is None
            or sig not in (signal.SIGTERM, signal.SIGINT)
        ):
            super().handle_exit(sig, frame)
            return
        drain = self._drain()
        if drain is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        # uvicorn raises the signal again once it has stopped (the process then ends by it).
        self._captured_signals.append(sig)
        self._loop.call_soon_threadsafe(self._start, drain)

    def _start(self, drain: Awaitable[None]) -> None:
        self._drainer = asyncio.ensure_future(self._drain_then_stop(drain))

    async def _drain_then_stop(self, drain: Awaitable[None]) -> None:
        try:
            await drain
        except Exception:
            log.exception("draining failed; stopping now")
        finally:
            self.should_exit = True
