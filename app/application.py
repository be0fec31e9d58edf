"""The app factory: settings in, a wired Starlette app out.

``create_app(settings)`` assembles routes and middleware; the lifespan opens the
shared resources (database, live hub, hypervisor connections, gateways ...) in
order and closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

from databases import Database
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from app import db as database
from app.alerts import Alerts
from app.audit import AuditLog
from app.auth.accounts import ensure_first_admin
from app.auth.bearer import BearerOnlyMiddleware, is_api_path
from app.auth.csrf import CSRFMiddleware
from app.auth.first_admin import announce_first_admin
from app.auth.headers import SecurityHeadersMiddleware
from app.auth.login import start_login_service
from app.auth.session import SessionRules
from app.auth.session_cookie import SessionCookieMiddleware
from app.auth.sessions import SessionStore
from app.broker.desktops import Broker
from app.broker.schedule_runner import ScheduleRunner
from app.clock import SYSTEM_CLOCK, Clock
from app.cluster.node import ClusterNode, check_cluster_settings
from app.cluster.replicas import LocalCounts
from app.directory import DirectoryLogin
from app.hyper.registry import HypervisorRegistry
from app.hyper.spice_tls import SpiceTls
from app.hyper.sshkeys import KnownHostsFile, ensure_dashboard_key, fingerprint
from app.i18n import available_languages, set_default_language
from app.i18n.middleware import LanguageMiddleware
from app.inventory.hypervisors import ensure_demo_hypervisor
from app.live.hub import LiveHub
from app.logging_setup import RequestIdMiddleware
from app.metrics import Exporter, LoopLagMonitor, Metrics, MetricsListener
from app.proxy.service import ConsoleService
from app.proxy.sessions import ConsoleSessions
from app.proxy.vv import build_vv
from app.retention import RetentionPurger
from app.server.heap import freeze_startup_heap
from app.server.limits import BodyLimitMiddleware
from app.services import Services
from app.settings import Settings
from app.templating import make_templates
from app.tlsca import DashboardCA
from app.views import console_role_routes
from app.views import routes as view_routes
from app.views.errors import exception_handlers
from app.vms.resync import Resync
from app.vms.service import VmService

log = logging.getLogger("kvmvdi")

STATIC_DIR = Path(__file__).parent / "static"

# npm packages served to browsers: URL prefix -> folder inside assets_dir (node_modules).
VENDOR_ASSETS = {
    "/vendor/bootstrap": "bootstrap/dist",
    "/vendor/bootstrap-icons": "bootstrap-icons/font",
    "/vendor/chart.js": "chart.js/dist",
    "/static/spice_html5/lib": "@spice-project/spice-html5/src",
    "/vendor/swagger-ui": "swagger-ui-dist",
    "/vendor/chartjs": "chart.js/dist",
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
    async with AsyncExitStack() as stack:
        services = await open_services(settings, app.state.clock, stack)
        app.state.services = services
        freeze_startup_heap()
        node = services.cluster
        log.info(
            "dashboard ready, database %s%s",
            database.safe_url(settings.database_url.get_secret_value()),
            f", cluster replica {node.name}" if node.clustered else "",
        )
        yield


async def open_services(settings: Settings, clock: Clock, stack: AsyncExitStack) -> Services:
    """Build and start every shared component, each handed what it needs; ``stack`` closes them in reverse."""
    check_cluster_settings(settings)
    url = settings.database_url.get_secret_value()
    await asyncio.to_thread(database.upgrade, url)
    db = database.connect_database(
        url, timeout=settings.database_timeout, causal_reads=settings.cluster.enabled
    )
    await db.connect()
    stack.push_async_callback(db.disconnect)
    ssh_dir = settings.data_dir / "ssh"
    ssh_key = await asyncio.to_thread(ensure_dashboard_key, ssh_dir)
    known_hosts = KnownHostsFile(ssh_dir)

    # This replica's part in the cluster (or the lone process's stand-ins): bus first, so that
    # nothing the other replicas say from now on is missed. Stopped last (its duties first, below).
    spice_ca = await asyncio.to_thread(DashboardCA.load_or_create, settings.ca_dir())
    node = ClusterNode(
        settings=settings,
        db=db,
        ssh_key_fingerprint=fingerprint(ssh_key.public_line),
        ca_fingerprint=spice_ca.fingerprint,
    )
    await node.connect()
    stack.push_async_callback(node.stop)

    hub = LiveHub(bus=node.bus)
    stack.callback(hub.close)
    # An outage and its end reach this replica's admins' live badge; the health check probes meanwhile.
    stack.callback(db.health.add_listener(lambda _: hub.publish("service", db.health.status(), local=True)))
    await stack.enter_async_context(db.health.watching(db.probe))

    first_admin = await ensure_first_admin(db)
    if first_admin is not None:
        announce_first_admin(settings, *first_admin)
    if settings.demo:
        await ensure_demo_hypervisor(db, settings.data_dir)

    metrics = Metrics()
    spice_tls = SpiceTls(spice_ca)
    # Hypervisors' SPICE certificates are re-issued by themselves; the CA above them is not.
    alerts = await _started(
        stack,
        Alerts(
            settings,
            delivery_listeners=[metrics.alert_delivered],
            certificates={"SPICE CA": DashboardCA.certificate_file(settings.ca_dir())},
            relay=node.alert_relay(),
        ),
    )
    alerts.run_duties(node.duties)
    audit = AuditLog(
        db,
        listeners=[metrics.audited],
        unauthenticated_limit=settings.security.audit_unauthenticated_per_minute,
    )
    stack.push_async_callback(audit.close)
    # The registry writes known_hosts from the pinned keys and connects to every hypervisor.
    hypervisors = await _started(
        stack,
        HypervisorRegistry(
            db=db,
            hub=hub,
            audit=audit,
            settings=settings,
            key=ssh_key,
            known_hosts=known_hosts,
            spice_tls=spice_tls,
            duties=node.duties,
            bus=node.bus,
        ),
    )
    node.duties.on_gained(hypervisors.take_over)
    stack.callback(alerts.watch_hypervisors(hypervisors))
    # Console tickets and sessions, with the CONNECT gateway when it is enabled.
    consoles = await _started(
        stack,
        ConsoleService(
            db=db,
            registry=hypervisors,
            settings=settings,
            audit=audit,
            clock=clock,
            session_listeners=[metrics.console_session_ended],
            bus=node.bus,
            roster=node.roster,
            replica=node.name if node.clustered else "",
        ),
    )
    vms = await _started(
        stack,
        VmService(
            db=db,
            hub=hub,
            audit=audit,
            registry=hypervisors,
            settings=settings.vms,
            operation_listeners=[metrics.operation_finished, alerts.rules.operation_finished],
            duties=node.duties,
            replica=node.name if node.clustered else "",
            thumbnail_store=node.thumbnail_store(),
            admin_watchers=node.replicas.admin_watchers if node.replicas is not None else None,
            alive_replicas=node.replicas.alive_names if node.replicas is not None else None,
            bus=node.bus,
        ),
    )
    # After an outage, what the lost lifecycle events would have done is done.
    stack.callback(db.health.add_recovery(Resync(db=db, sync=vms.sync, consoles=consoles)))
    # The broker starts and stops desktops through the VM service; it stops before it.
    broker = await _started(
        stack,
        Broker(
            db=db,
            hub=hub,
            audit=audit,
            registry=hypervisors,
            consoles=consoles,
            vms=vms,
            clock=clock,
            duties=node.duties,
            build_vv=build_vv,
            reaper_interval=settings.broker.reaper_interval,
            request_listeners=[metrics.desktop_requested, alerts.rules.desktop_requested],
        ),
    )
    stack.callback(db.health.add_recovery(broker.recover))
    # Pool schedules: keep-ready windows, nightly power-off, reset or populate (each start once).
    schedules = await _started(
        stack,
        ScheduleRunner(
            db=db,
            clock=clock,
            time_zone=ZoneInfo(settings.time_zone),
            audit=audit,
            registry=hypervisors,
            power=broker.power,
            vms=vms,
            interval=settings.broker.schedule_interval,
            duties=node.duties,
            bus=node.bus,
        ),
    )
    # Audit records past their retention and dead API tokens (once an interval; a duty in a cluster).
    retention = await _started(
        stack,
        RetentionPurger(
            db=db,
            clock=clock,
            audit=audit,
            retention_days=settings.audit.retention_days,
            interval=settings.audit.purge_interval,
            duties=node.duties,
        ),
    )
    exporter = await start_metrics(
        metrics, settings, stack, db=db, hypervisors=hypervisors, sessions=consoles.sessions, hub=hub
    )
    directory = DirectoryLogin(settings.directory)
    logins = await start_login_service(
        settings.security,
        db=db,
        audit=audit,
        directory=directory,
        throttle_store=node.throttle_store(clock),
        stack=stack,
    )

    def counts() -> LocalCounts:
        return LocalCounts(
            live_admins=hub.admin_subscriber_count,
            live_clients=hub.client_subscriber_count,
            console_connections=consoles.sessions.connection_count,
        )

    # Heartbeat and duties once everything they use runs; the duties stop first.
    await node.start(counts=counts, consoles=consoles, live=hub)
    stack.push_async_callback(node.duties.stop)
    session_rules = SessionRules.from_settings(settings.security, clock)
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        hub=hub,
        audit=audit,
        session_rules=session_rules,
        sessions=SessionStore(db, session_rules, directory),
        logins=logins,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        hypervisors=hypervisors,
        consoles=consoles,
        vms=vms,
        directory=directory,
        broker=broker,
        schedules=schedules,
        retention=retention,
        metrics=exporter,
        alerts=alerts,
        cluster=node,
    )


class _Startable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


T = TypeVar("T", bound=_Startable)


async def _started(stack: AsyncExitStack, component: T) -> T:
    """Start ``component`` now and stop it when the dashboard stops."""
    await component.start()
    stack.push_async_callback(component.stop)
    return component


async def start_metrics(
    metrics: Metrics,
    settings: Settings,
    stack: AsyncExitStack,
    *,
    db: Database,
    hypervisors: HypervisorRegistry,
    sessions: ConsoleSessions,
    hub: LiveHub,
) -> Exporter:
    """The /metrics exposition, its own listener when configured, and the event-loop lag sampler."""
    exporter = Exporter(
        metrics=metrics, settings=settings.metrics, db=db, hypervisors=hypervisors, sessions=sessions, hub=hub
    )
    lag = LoopLagMonitor(metrics.loop_lagged, interval=settings.metrics.loop_lag_interval)
    await lag.start()
    stack.push_async_callback(lag.stop)
    if settings.metrics.port:
        listener = MetricsListener(exporter, settings.metrics.host, settings.metrics.port)
        await listener.start()
        stack.push_async_callback(listener.stop)
    return exporter


def create_app(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> Starlette:
    """The dashboard; ``clock`` is what time it is for everything that decides by time (tests move it)."""
    if settings.i18n.default_language not in available_languages():
        raise ValueError(
            f"i18n.default_language {settings.i18n.default_language!r} has no catalogue; "
            f"available: {', '.join(available_languages())}"
        )
    set_default_language(settings.i18n.default_language)
    middleware = [
        # Outermost: every line logged while a request runs, and its answer, carry its id.
        Middleware(RequestIdMiddleware),
        # Every answer, error pages included, in the language chosen for the request.
        Middleware(LanguageMiddleware),
        Middleware(SecurityHeadersMiddleware, https=settings.server.https),
        # Outside the session and CSRF middleware: every body read anywhere is bounded.
        Middleware(
            BodyLimitMiddleware,
            max_body_bytes=settings.server.max_body_bytes,
            body_timeout=settings.server.body_timeout,
        ),
        # A bearer-token request to the APIs brings no cookie: the token alone authenticates it.
        Middleware(BearerOnlyMiddleware),
        Middleware(
            SessionCookieMiddleware,
            secret=settings.session_secret(),
            max_age=settings.security.session_max_age,
            https=settings.server.https,
        ),
        Middleware(CSRFMiddleware, exempt_paths=frozenset({"/api/v1/login"}), bearer_paths=is_api_path),
    ]
    if settings.cluster.role == "console":
        # A console-only replica: the console websocket and the health probes, nothing else.
        routes = console_role_routes()
    else:
        routes = [*view_routes(), *_asset_routes(settings)]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=exception_handlers,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.templates = make_templates(settings)
    return app
