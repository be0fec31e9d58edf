"""The app factory: settings in, a wired Starlette app out.

``create_app(settings)`` assembles routes and middleware; the lifespan opens the
shared resources (database, live hub, hypervisor connections, gateways ...) in
order and closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from app import db as database
from app.audit import AuditLog
from app.auth.accounts import ensure_first_admin
from app.auth.csrf import CSRFMiddleware
from app.auth.throttle import LoginThrottle
from app.broker.desktops import Broker
from app.directory import DirectoryLogin
from app.live.hub import LiveHub
from app.services import Services
from app.settings import Settings
from app.templating import make_templates
from app.views import routes as view_routes

log = logging.getLogger("kvmvdi")

STATIC_DIR = Path(__file__).parent / "static"

# npm packages served to browsers: URL prefix -> folder inside assets_dir (node_modules).
VENDOR_ASSETS = {
    "/vendor/bootstrap": "bootstrap/dist",
    "/vendor/bootstrap-icons": "bootstrap-icons/font",
    "/static/spice_html5/lib": "@spice-project/spice-html5/src",
}


def _asset_routes(settings: Settings) -> list[BaseRoute]:
    mounts: list[BaseRoute] = [
        Mount(prefix, StaticFiles(directory=settings.assets_dir / folder, check_dir=False))
        for prefix, folder in VENDOR_ASSETS.items()
    ]
    mounts.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    return mounts


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    url = settings.database_url.get_secret_value()
    async with AsyncExitStack() as stack:
        await asyncio.to_thread(database.upgrade, url)
        db = database.connect_database(url)
        await db.connect()
        stack.push_async_callback(db.disconnect)

        hub = LiveHub()
        stack.callback(hub.close)

        first_admin = await ensure_first_admin(db)
        if first_admin is not None:
            announce_first_admin(settings, *first_admin)

        audit = AuditLog(db)
        broker = Broker(db=db, hub=hub, audit=audit)
        await broker.start()
        stack.push_async_callback(broker.stop)

        services = Services(
            settings=settings,
            db=db,
            hub=hub,
            audit=audit,
            login_throttle=LoginThrottle(
                max_failures=settings.security.login_max_failures,
                window=settings.security.login_failure_window,
            ),
            directory=DirectoryLogin(settings.directory),
            broker=broker,
        )
        app.state.services = services
        log.info("dashboard ready, database %s", database.safe_url(url))
        yield


def announce_first_admin(settings: Settings, username: str, password: str) -> None:
    """Print the generated first admin password once, to the console only (never to logs)."""
    scheme = "https" if settings.server.https else "http"
    url = f"{scheme}://{settings.server.host}:{settings.server.port}/"
    banner = (
        "\n" + "=" * 64 + "\n"
        f"  KVM-VDI dashboard: {url}\n"
        f"  First administrator: {username}\n"
        f"  Password (shown once, change it at first log-in): {password}\n" + "=" * 64 + "\n"
    )
    sys.stdout.write(banner)
    sys.stdout.flush()


def create_app(settings: Settings) -> Starlette:
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=settings.session_secret(),
            session_cookie="kvmvdi_session",
            max_age=settings.security.session_max_age,
            same_site="lax",
            https_only=settings.server.https,
        ),
        Middleware(CSRFMiddleware, exempt_paths=frozenset({"/api/v1/login"})),
    ]
    app = Starlette(
        routes=[*view_routes(), *_asset_routes(settings)],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.templates = make_templates(settings)
    return app
