"""Fixtures that give tests real services: MariaDB, isolated libvirt hypervisors with
sshd, OpenLDAP, Xvfb, headless Chromium, boot-sector guests and a fresh database.

Every service starts lazily, the first time a test asks for it, and stops at the
end of the session. A service that cannot start is an error of the tests that
need it, never a skip. The services themselves live in :mod:`tests.services`.

Database selection: ``--db=sqlite|mariadb`` or ``KVMVDI_TEST_DATABASE``
(default sqlite) decides what ``database_url`` gives; ``database_url_any`` runs a
test on both.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from app.tlsca import DashboardCA
from tests.services import report
from tests.services.browser import BrowserFactory
from tests.services.galera import GaleraCluster
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.mariadb import MariaDB
from tests.services.prometheus import Prometheus
from tests.services.redis import RedisServer
from tests.services.rundir import RunDir, reap_stale_runs
from tests.services.samba_ad import SambaAD
from tests.services.slapd import Slapd
from tests.services.smtp import SmtpServer
from tests.services.xrdp import XrdpServer
from tests.services.xvfb import Xvfb
from tests.webhook_receiver import WEBHOOK_SECRET, WebhookReceiver

DATABASES = ("sqlite", "mariadb")

# A real dashboard under uvicorn: fixtures ``dashboard`` and ``dashboard_factory``; a test near its
# time limit prints where every thread and task waits; pytester runs pytest on made-up tests; the
# fast tier.
pytest_plugins = ["tests.dashboard", "tests.hang_report", "pytester", "tests.tiers"]


class _Service(Protocol):
    def start(self) -> object: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Service)


def _running(service: S) -> Iterator[S]:
    """Start a service for a fixture and stop it afterwards, even when the start failed half-way."""
    try:
        service.start()
        yield service
    finally:
        service.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=DATABASES,
        default=None,
        help="database behind the database_url fixture (default: $KVMVDI_TEST_DATABASE or sqlite)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # CI stops a job with SIGTERM: turn it into KeyboardInterrupt, on which pytest
    # still runs fixture teardown (domains destroyed, namespaces deleted).
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def uses_selected_database(item: pytest.Item) -> bool:
    """Whether a test runs on the database this run selects: it asks for ``database_backend``
    (``database_url`` and the dashboard fixtures do), or it is marked ``database``."""
    fixtures = getattr(item, "fixturenames", ())
    return "database_backend" in fixtures or item.get_closest_marker("database") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The MariaDB pass of scripts/run-tests.sh re-runs only what the database choice can change:
    # a test that never touches the selected database (XML builders, the proxy pump, a guest's
    # firmware) or that runs on both databases itself (``database_url_any``) ran in pass 1.
    if os.environ.get("KVMVDI_DATABASE_TESTS_ONLY") != "1":
        return
    kept = [item for item in items if uses_selected_database(item)]
    dropped = [item for item in items if not uses_selected_database(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def selected_database(config: pytest.Config) -> str:
    choice = config.getoption("--db") or os.environ.get("KVMVDI_TEST_DATABASE") or "sqlite"
    if choice not in DATABASES:
        raise pytest.UsageError(f"KVMVDI_TEST_DATABASE={choice!r}: use one of {', '.join(DATABASES)}")
    return str(choice)


def pytest_report_header(config: pytest.Config) -> str:
    return f"kvm-vdi test database: {selected_database(config)}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    events = report.events()
    if not events:
        return
    terminalreporter.section("real services started by this run")
    for event in events:
        terminalreporter.write_line(event.line())


# --- the run directory ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def run_dir(request: pytest.FixtureRequest) -> Iterator[RunDir]:
    """``/tmp/kvmvdi-test-<id>`` (0755). Torn down last: then nothing of the run may be left."""
    reaped = reap_stale_runs()
    if reaped:
        report.note("harness", f"cleaned up after crashed runs {', '.join(reaped)}")
    rd = RunDir()
    report.note("harness", f"run dir {rd.path}")
    yield rd
    leftovers = rd.leftovers()
    keep_env = os.environ.get("KVMVDI_KEEP_RUN_DIR", "")
    keep = keep_env == "1" or (keep_env == "on-failure" and request.session.testsfailed > 0)
    rd.cleanup(keep=keep)
    if keep:
        report.note("harness", f"kept run dir {rd.path}")
    if leftovers:
        raise RuntimeError(f"the run left things behind (now removed): {'; '.join(leftovers)}")
    report.note("harness", "teardown complete: no processes, namespaces or links left")


@pytest.fixture(scope="session", autouse=True)
def dashboard_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardCA]:
    """One certificate authority for every dashboard of the session (as replicas of one installation
    share theirs): a test hypervisor keeps the SPICE certificate the first dashboard issued it,
    instead of each dashboard issuing its own. ``KVMVDI_CONSOLE__CA_DIR`` reaches the CLI too."""
    directory = tmp_path_factory.mktemp("dashboard-ca")
    ca = DashboardCA.load_or_create(directory)
    previous = os.environ.get("KVMVDI_CONSOLE__CA_DIR")
    os.environ["KVMVDI_CONSOLE__CA_DIR"] = str(directory)
    yield ca
    if previous is None:
        os.environ.pop("KVMVDI_CONSOLE__CA_DIR", None)
    else:
        os.environ["KVMVDI_CONSOLE__CA_DIR"] = previous


# --- services ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mariadb(run_dir: RunDir) -> Iterator[MariaDB]:
    """A private mariadbd with database ``vdi``; ``.url`` is ``mysql://vdi:PW@127.0.0.1:PORT/vdi``."""
    yield from _running(MariaDB(run_dir))


@pytest.fixture(scope="session")
def galera(run_dir: RunDir) -> Iterator[GaleraCluster]:
    """A 3-node MariaDB Galera cluster; ``.nodes[i].url`` straight to a node, database ``vdi``."""
    yield from _running(GaleraCluster(run_dir))


@pytest.fixture(scope="session")
def redis_server(run_dir: RunDir) -> Iterator[RedisServer]:
    """A private Redis (no persistence); ``.url``, ``.restart()``."""
    yield from _running(RedisServer(run_dir))


@pytest.fixture(scope="session")
def hypervisor_host(run_dir: RunDir) -> Iterator[LibvirtHost]:
    """Hypervisor h0: its own libvirtd + sshd, SSH on a 127.0.0.1 port."""
    yield from _running(LibvirtHost(run_dir, "h0"))


@pytest.fixture(scope="session")
def second_hypervisor(run_dir: RunDir) -> Iterator[LibvirtHost]:
    """Hypervisor h1 in a network namespace of its own (SSH on port 22 of 10.251.x.2)."""
    yield from _running(LibvirtHost(run_dir, "h1", netns=True))


@pytest.fixture(scope="session")
def slapd(run_dir: RunDir) -> Iterator[Slapd]:
    """OpenLDAP with a classic tree (``slapd.users``) and an AD-like one (``slapd.ad``)."""
    yield from _running(Slapd(run_dir))


@pytest.fixture(scope="session")
def samba_ad(run_dir: RunDir) -> Iterator[SambaAD]:
    """A real Samba AD DC (corp.example.com) on port 389 of its own network namespace."""
    yield from _running(SambaAD(run_dir))


@pytest.fixture(scope="session")
def prometheus(run_dir: RunDir) -> Iterator[Prometheus]:
    """A real Prometheus scraping each second what ``prometheus.scrape(host:port)`` names, with ``.token``."""
    yield from _running(Prometheus(run_dir))


@pytest.fixture(scope="session")
def smtp_server(run_dir: RunDir) -> Iterator[SmtpServer]:
    """aiosmtpd delivering every message to a Maildir: ``.host``, ``.port``, ``.messages()``."""
    yield from _running(SmtpServer(run_dir))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP server receiving alert webhooks and checking their signature (secret: WEBHOOK_SECRET)."""
    hooks = WebhookReceiver(WEBHOOK_SECRET).start()
    yield hooks
    hooks.stop()


@pytest.fixture(scope="session")
def xvfb(run_dir: RunDir) -> Iterator[Xvfb]:
    """A 1280x800 virtual X display; use ``xvfb.env`` for X clients."""
    yield from _running(Xvfb(run_dir))


@pytest.fixture(scope="session")
def xrdp_server(run_dir: RunDir) -> Iterator[XrdpServer]:
    """A real RDP server (xrdp + Xorg sessions) in its own network namespace: ``.host``, ``.username``."""
    yield from _running(XrdpServer(run_dir))


@pytest.fixture(scope="session")
def browser(run_dir: RunDir) -> Iterator[BrowserFactory]:
    """Factory of headless Chromium drivers: ``browser.new()`` or ``with browser.session() as d``."""
    factory = BrowserFactory(run_dir)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def guest_images(run_dir: RunDir) -> GuestImages:
    """Boot-sector guest bases (built with nasm on first use); ``.overlay(kind, path)``."""
    return GuestImages(run_dir.sub("guests"))


# --- databases -----------------------------------------------------------------------------------


def fresh_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "mariadb":
        server: MariaDB = request.getfixturevalue("mariadb")
        server.reset()
        return server.url
    return f"sqlite:///{tmp_path / 'vdi.sqlite3'}"


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    """ "sqlite" or "mariadb": what ``database_url`` gives in this run."""
    return selected_database(request.config)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path, database_backend: str) -> str:
    """URL of a fresh, empty database: a new SQLite file, or the reset MariaDB ``vdi`` database."""
    return fresh_database(database_backend, request, tmp_path)


@pytest.fixture(params=DATABASES)
def database_url_any(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like ``database_url``, but the test runs once on SQLite and once on MariaDB."""
    return fresh_database(str(request.param), request, tmp_path)
