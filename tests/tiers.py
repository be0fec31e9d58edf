"""The fast tier: tests that need no root, no real service and no running dashboard.

Registered as a pytest plugin by tests/conftest.py. A test's tier is derived from the fixtures
it asks for, so nobody has to remember a marker: every real service of the suite hangs off
``run_dir`` (MariaDB, the hypervisors, LDAP, Samba, Xvfb, Chromium, Prometheus, SMTP, guests),
the directory tests start their own slapd (``ldap_directory``, ``ad_directory``),
``dashboard_factory`` starts whole dashboards, ``database_url_any`` runs on MariaDB too, and
``database_url``/``database_backend`` give the database the run selects (migrated by alembic, often
for a ``kvm-vdi`` subprocess: the MariaDB pass runs these again). Such a test is marked ``service``
at collection; so is one marked ``kvm``, ``browser`` or ``database`` (a test using the guest images
or Chromium is marked ``kvm`` or ``browser`` from its fixtures). The fast tier leaves out
``slow`` tests too (``kvm-vdi`` subprocesses, pools of worker processes).

``make test-fast`` sets ``KVMVDI_TEST_TIER=fast``: the ``service`` tests are deselected, and
what a test reaches only at run time (``request.getfixturevalue("mariadb")``, a module's own
fixture calling ``start_dashboard``) is refused with the way out: mark the test or its module
``service``. At the end of a fast run, a service that started anyway fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest

from tests.services import report

TIER_VARIABLE = "KVMVDI_TEST_TIER"

# Asking for one of these, directly or through another fixture, starts a real service, a dashboard
# or a database (the directory tests' own slapd lives outside ``run_dir``).
SERVICE_FIXTURES = frozenset(
    {
        "run_dir",
        "dashboard_factory",
        "database_url_any",
        "mariadb",
        "database_url",
        "database_backend",
        "ldap_directory",
        "ad_directory",
    }
)
SERVICE_MARKERS = frozenset({"service", "kvm", "browser", "database"})
# A test that boots guests does it from the suite's guest images, one that drives Chromium through
# the ``browser`` fixture: such a test is marked ``kvm`` or ``browser`` from its fixtures too, so
# the markers select what they say (``-m "not kvm"``) whether or not its module remembered them.
DERIVED_MARKERS = {"guest_images": "kvm", "browser": "browser"}


def fast_tier() -> bool:
    return os.environ.get(TIER_VARIABLE) == "fast"


def needs_service(fixtures: Iterable[str], markers: Iterable[str]) -> bool:
    """Whether a test with these fixtures (its whole closure) and markers needs a real service."""
    return bool(set(fixtures) & SERVICE_FIXTURES or set(markers) & SERVICE_MARKERS)


class FastTierRefusal(Exception):
    """A test of the fast tier reached a real service at run time."""


def refuse_service(what: str) -> None:
    """Called where a service or a dashboard starts: in the fast tier that is a test's error."""
    if fast_tier():
        raise FastTierRefusal(
            f"the fast tier starts no service, but this test reached {what} at run time: "
            "mark the test (or its module) with @pytest.mark.service"
        )


def derived_markers(fixtures: Iterable[str]) -> set[str]:
    """The markers a test with these fixtures (its whole closure) carries whatever it declares."""
    return {marker for fixture, marker in DERIVED_MARKERS.items() if fixture in set(fixtures)}


def _left_out_of_fast_tier(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) is not None for name in ("service", "slow"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for marker in derived_markers(fixtures):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        markers = (mark.name for mark in item.iter_markers())
        if needs_service(fixtures, markers):
            item.add_marker(pytest.mark.service)
    if not fast_tier():
        return
    kept = [item for item in items if not _left_out_of_fast_tier(item)]
    dropped = [item for item in items if _left_out_of_fast_tier(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest) -> None:
    if fixturedef.argname in SERVICE_FIXTURES:
        refuse_service(f"the {fixturedef.argname!r} fixture")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    started = report.events()
    if fast_tier() and started:
        lines = "; ".join(event.line() for event in started)
        session.config.get_terminal_writer().line(f"the fast tier started real services: {lines}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
