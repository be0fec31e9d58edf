"""Running a real dashboard (uvicorn on a loopback port) inside the test session.

Registered as a pytest plugin by tests/conftest.py. Tests get a
:class:`RunningDashboard` with the app's services and HTTP clients that log in
like a browser does (session cookie + CSRF token).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app import db as database
from app.application import create_app
from app.auth.accounts import create_local_user
from app.server.options import serving_options
from app.services import Services
from app.settings import Settings
from tests.clock import MovableClock
from tests.openapi_conformance import ConformanceRecorder
from tests.services.ports import allocate_port, release_port
from tests.tiers import refuse_service
from tests.waiting import eventually

REPO = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-test-password-1"
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def free_port() -> int:
    """A loopback port no other test run on this machine can take (see tests/services/ports.py).

    Binding port 0 instead hands out an ephemeral port, which any outgoing connection of a
    concurrent run may take before the dashboard binds it.
    """
    return allocate_port()


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "assets_dir": REPO / "node_modules",
        "server": {"host": "127.0.0.1", "port": free_port()},
        "gateway": {"host": "127.0.0.1", "port": free_port()},
        # Password checks skip the idle CPU class here: the suite keeps both cores busy on purpose, where
        # every check would wait out the whole idle window. tests/test_password_workers.py tests the
        # class and bench/login_storm.py measures what it is for.
        "security": {"session_secret": "test-session-secret-" + data_dir.name, "argon2_idle_seconds": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


class BrowserLikeClient:
    """An httpx client holding a session cookie, adding the CSRF token to unsafe requests."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=30)
        self.csrf: str | None = None

    async def refresh_csrf(self, path: str = "/login") -> str:
        response = await self.http.get(path, follow_redirects=True)
        match = _CSRF_META.search(response.text)
        assert match, f"no CSRF token on {path}"
        self.csrf = match.group(1)
        return self.csrf

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, **kwargs)

    async def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        if self.csrf is None:
            await self.refresh_csrf()
        if "json" in kwargs:
            kwargs.setdefault("headers", {})["X-CSRF-Token"] = self.csrf
            return await self.http.post(path, **kwargs)
        return await self.http.post(path, data={**(data or {}), "csrf_token": self.csrf}, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        if self.csrf is None:
            await self.refresh_csrf()
        kwargs.setdefault("headers", {})["X-CSRF-Token"] = self.csrf
        return await self.http.patch(path, **kwargs)

    async def login(self, username: str, password: str, *, path: str = "/login") -> httpx.Response:
        await self.refresh_csrf(path)
        response = await self.post(path, {"username": username, "password": password})
        # A new session gets a new CSRF token.
        if response.status_code in (302, 303):
            await self.refresh_csrf(response.headers["location"])
        return response

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class RunningDashboard:
    settings: Settings
    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]
    admin_password: str
    # What time it is for the dashboard's sessions, tickets, leases and throttling: move it forward.
    clock: MovableClock
    _clients: list[BrowserLikeClient] = field(default_factory=list)

    app: Any = None
    conformance: ConformanceRecorder | None = None

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def client(self) -> BrowserLikeClient:
        client = BrowserLikeClient(self.url)
        self._clients.append(client)
        return client

    async def admin(self) -> BrowserLikeClient:
        """A client logged in as the admin created for the test."""
        client = self.client()
        response = await client.login("admin", self.admin_password)
        assert response.status_code == 303, response.text
        return client

    async def stop(self) -> None:
        for client in self._clients:
            await client.aclose()
        self.server.should_exit = True
        await asyncio.wait_for(self.task, timeout=30)
        release_port(self.settings.server.port)
        release_port(self.settings.gateway.port)
        if self.conformance is not None:
            # The answers this test received, held to the app's generated API description.
            found = self.conformance.problems(self.app.routes)
            assert found == [], "answers the OpenAPI description does not describe:\n" + "\n".join(found)


async def start_dashboard(
    settings: Settings, *, admin_password: str | None = ADMIN_PASSWORD
) -> RunningDashboard:
    """Start uvicorn with a fresh app; with ``admin_password``, an admin exists beforehand."""
    refuse_service("a dashboard")
    url = settings.database_url.get_secret_value()
    await asyncio.to_thread(database.upgrade, url)
    if admin_password is not None:
        db = database.connect_database(url)
        await db.connect()
        try:
            await create_local_user(db, "admin", admin_password, role="admin")
        finally:
            await db.disconnect()
    clock = MovableClock()
    app = create_app(settings, clock=clock)
    conformance = ConformanceRecorder(app)
    config = uvicorn.Config(
        conformance,
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        lifespan="on",
        **serving_options(settings.server),
        ssl_certfile=settings.server.ssl_certfile,
        ssl_keyfile=settings.server.ssl_keyfile,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), "uvicorn serving the dashboard (or stopping)")
    if task.done():
        try:
            task.result()
        except SystemExit as exc:
            # uvicorn exits when the lifespan fails; a plain error keeps pytest's loop intact.
            raise RuntimeError(f"the dashboard failed to start (uvicorn exit status {exc.code})") from None
    assert server.started, "the dashboard did not start"
    scheme = "https" if settings.server.ssl_certfile else "http"
    return RunningDashboard(
        settings=settings,
        url=f"{scheme}://{settings.server.host}:{settings.server.port}",
        server=server,
        task=task,
        admin_password=admin_password or "",
        clock=clock,
        app=app,
        conformance=conformance,
    )


DashboardFactory = Callable[..., Awaitable[RunningDashboard]]


@pytest.fixture
async def dashboard_factory(tmp_path: Path, database_url: str) -> AsyncIterator[DashboardFactory]:
    """Start dashboards with custom settings: ``await dashboard_factory(console={"ticket_ttl": 5})``."""
    started: list[RunningDashboard] = []

    async def factory(*, admin_password: str | None = ADMIN_PASSWORD, **overrides: Any) -> RunningDashboard:
        data_dir = tmp_path / f"var{len(started)}"
        running = await start_dashboard(
            make_settings(data_dir, database_url, **overrides), admin_password=admin_password
        )
        started.append(running)
        return running

    yield factory
    for running in reversed(started):
        await running.stop()


@pytest.fixture
async def dashboard(dashboard_factory: DashboardFactory) -> RunningDashboard:
    """A running dashboard on a fresh database, with admin/ADMIN_PASSWORD."""
    return await dashboard_factory()
