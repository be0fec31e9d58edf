"""The fast tier (``make test-fast``) starts no real service: tests/tiers.py."""

from __future__ import annotations

import pytest

from tests.tiers import TIER_VARIABLE, derived_markers, needs_service

# A suite in miniature: ``run_dir`` stands for the root every real service hangs off.
CONFTEST = """
import pytest

pytest_plugins = ["tests.tiers"]


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path.parent / "service-started").touch()
    return tmp_path


@pytest.fixture
def hypervisor(run_dir):
    return run_dir
"""

TESTS = """
import pytest


def test_pure_logic():
    assert 1 + 1 == 2


def test_boots_a_guest(hypervisor):
    assert hypervisor


def test_reaches_a_service_only_at_run_time(request):
    assert request.getfixturevalue("run_dir")


@pytest.mark.service
def test_marked_by_hand(request):
    assert request.getfixturevalue("run_dir")


@pytest.mark.slow
def test_slow_but_pure():
    assert sum(range(10)) == 45
"""


def test_a_test_needs_a_service_through_any_fixture_of_its_closure_or_a_marker() -> None:
    assert not needs_service(["tmp_path", "request"], ["asyncio", "parametrize"])
    assert needs_service(["hypervisor_host", "run_dir"], [])
    assert needs_service(["dashboard", "dashboard_factory", "database_url"], [])
    assert needs_service(["database_url", "database_backend"], ["asyncio"])
    assert needs_service(["database_url_any"], [])
    assert needs_service(["tmp_path"], ["kvm"])
    assert needs_service([], ["browser"])
    assert needs_service([], ["database"])


def test_the_fast_tier_leaves_out_service_tests_and_refuses_a_service_reached_at_run_time(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tier=TESTS)
    monkeypatch.setenv(TIER_VARIABLE, "fast")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the miniature needs none; saves seconds
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, failed=1, deselected=3)
    result.stdout.fnmatch_lines(
        [
            "*FastTierRefusal: the fast tier starts no service*'run_dir'*mark the test*service*",
            "PASSED test_tier.py::test_pure_logic",
            "FAILED test_tier.py::test_reaches_a_service_only_at_run_time*",
        ]
    )
    assert not list(pytester.path.rglob("service-started")), "a service started in the fast tier"


def test_outside_the_fast_tier_every_test_runs_and_the_service_tests_are_marked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tier=TESTS)
    monkeypatch.delenv(TIER_VARIABLE, raising=False)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the miniature needs none; saves seconds
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "service")
    result.assert_outcomes(passed=2, deselected=3)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


GUEST_CONFTEST = """
import pytest

pytest_plugins = ["tests.tiers"]


@pytest.fixture
def guest_images(tmp_path):
    return tmp_path


@pytest.fixture
def desktop(guest_images):
    return guest_images
"""

GUEST_TESTS = """
def test_boots_a_desktop_without_saying_so(desktop):
    assert desktop


def test_pure_logic():
    assert 1 + 1 == 2
"""


def test_a_test_that_boots_guests_or_drives_chromium_is_marked_so_from_its_fixtures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert derived_markers(["tmp_path", "guest_images", "vm_world"]) == {"kvm"}
    assert derived_markers(["browser", "run_dir"]) == {"browser"}
    assert derived_markers(["tmp_path", "request"]) == set()
    pytester.makeconftest(GUEST_CONFTEST)
    pytester.makepyfile(test_guests=GUEST_TESTS)
    monkeypatch.delenv(TIER_VARIABLE, raising=False)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not kvm", "-rA")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["PASSED test_guests.py::test_pure_logic"])
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "kvm and service", "-rA")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["PASSED test_guests.py::test_boots_a_desktop_without_saying_so"])
