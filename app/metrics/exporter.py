"""``/metrics``: the exposition Prometheus scrapes, its token check, and the optional listener of its own.

On the dashboard's port ``/metrics`` is served only when ``metrics.token`` is set,
and only to requests that bear it (``Authorization: Bearer <token>``). With
``metrics.port`` set, a second listener (e.g. on a management address) serves
``/metrics`` and nothing else; it asks for the token too when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Iterator

import uvicorn
from databases import Database
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.hyper import HypervisorRegistry
from app.live.hub import LiveHub
from app.metrics.events import Metrics
from app.metrics.state import Exposition, StateCollector, read_state
from app.proxy.sessions import ConsoleSessions
from app.settings import MetricsSettings


class Exporter:
    def __init__(
        self,
        *,
        metrics: Metrics,
        settings: MetricsSettings,
        db: Database,
        hypervisors: HypervisorRegistry,
        sessions: ConsoleSessions,
        hub: LiveHub,
    ) -> None:
        self.metrics = metrics
        self.settings = settings
        self._db = db
        self._hypervisors = hypervisors
        self._sessions = sessions
        self._hub = hub
        # Process figures (CPU, memory, file descriptors) and the Python version; not registered globally.
        self._process = (ProcessCollector(registry=None), PlatformCollector(registry=None))

    async def render(self) -> bytes:
        state = await read_state(
            db=self._db,
            hypervisors=self._hypervisors,
            sessions=self._sessions,
            hub=self._hub,
            metrics=self.metrics,
        )
        return generate_latest(Exposition(self.metrics.registry, StateCollector(state), *self._process))

    def token_accepted(self, authorization: str) -> bool:
        token = self.settings.token
        if token is None:
            return False
        scheme, _sep, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        )

    async def respond(self, request: Request, *, token_required: bool) -> Response:
        if token_required and not self.token_accepted(request.headers.get("authorization", "")):
            return PlainTextResponse(
                "A valid bearer token is required.\n",  # i18n-ignore: read by Prometheus, not by people
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(await self.render(), media_type=CONTENT_TYPE_LATEST)


class _QuietServer(uvicorn.Server):
    """A uvicorn server inside the dashboard's process: the dashboard's own server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsListener:
    """``/metrics`` alone on ``metrics.host:metrics.port``."""

    def __init__(self, exporter: Exporter, host: str, port: int) -> None:
        self._exporter = exporter

        async def endpoint(request: Request) -> Response:
            return await exporter.respond(request, token_required=exporter.settings.token is not None)

        app = Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", log_config=None, log_level=None, access_log=False
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="metrics-listener")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the metrics listener stopped at start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
