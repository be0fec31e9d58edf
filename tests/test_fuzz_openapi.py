"""Every page, form and JSON endpoint, fuzzed from the generated OpenAPI description.

schemathesis generates requests from the description of every route (valid bodies and
queries, then invalid ones) and sends them as an administrator, as a portal user (its
session for the portal, its broker token for the broker API) and without credentials
(invalid requests only where the caller's inputs are read: everywhere for the administrator,
the portal and broker API for the portal user, nowhere without credentials).
No answer may be a server error, no request may go unanswered, and the dashboard serves
its pages to the same sessions afterwards. A fixed number of examples per operation,
derandomized: a run is reproducible and bounded in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from schemathesis import GenerationMode

from app.api.openapi import openapi_document
from tests.broker.records import CLIENT_PASSWORD, add_client, add_connected_hypervisor, add_pool, add_vm
from tests.conftest import fresh_database, selected_database
from tests.dashboard import BrowserLikeClient, RunningDashboard, make_settings, start_dashboard
from tests.fuzzing import MODES, Caller, Findings, fuzz

# Its module fixture starts a dashboard of its own.
pytestmark = pytest.mark.service

# Generated requests per operation and generation mode (valid, invalid), per caller.
EXAMPLES = 1
# Logging out ends the caller's own session: the rest of its run would only see refusals.
LOG_OUTS = {("POST", "/logout"), ("POST", "/client/logout"), ("POST", "/api/v1/logout")}
# A generated hypervisor record could name directories anywhere on the test machine, where
# the VMs fuzzed next would write their disks: the administrator does not send these (the
# hostile-input corpus and their own tests cover them; the other callers are refused).
HYPERVISOR_RECORDS = {
    ("POST", "/hypervisors/new"),
    ("POST", "/hypervisors/{hypervisor_id}/edit"),
    ("POST", "/api/v1/admin/hypervisors"),
    ("PATCH", "/api/v1/admin/hypervisors/{hypervisor_id}"),
}
# Log-ins are for callers without a session (and the slowest operations: a password hash each).
LOG_INS = {("POST", "/login"), ("POST", "/client/login"), ("POST", "/api/v1/login")}


@dataclass
class Fuzzed:
    dashboard: RunningDashboard
    admin: BrowserLikeClient
    portal: BrowserLikeClient
    broker_token: str
    document: dict[str, Any]
    # The account the /users/{user_id}/... forms act on: neither caller's own.
    victim: int
    hypervisor_id: int
    ghost_vm_id: int
    pool_id: int


@pytest.fixture(scope="module")
async def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fuzzed]:
    """One dashboard with one of everything (a hypervisor, a desktop, a pool and its user)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    url = fresh_database(selected_database(request.config), request, tmp)
    dashboard = await start_dashboard(make_settings(tmp / "var", url, server={"keepalive_timeout": 120}))
    try:
        services = dashboard.services
        # Its directories are the test's own (the ISO directory is missing, as on a fresh host):
        # what the fuzzed VM forms make lands there.
        hv = await add_connected_hypervisor(services.hypervisors, services.db, directories=tmp)
        admin = await dashboard.admin()
        # A VM row whose domain the hypervisor does not hold (removed outside the dashboard).
        vm = await add_vm(services.db, "ghost-vm", hv, kind="simple")
        user = await add_client(services.db, "fuzzy")
        pool = await add_pool(services.db, "fuzz-pool", [vm], [user])
        victim = await add_client(services.db, "victim")
        async with httpx.AsyncClient(base_url=dashboard.url, timeout=60) as http:
            login = await http.post("/api/v1/login", json={"username": "fuzzy", "password": CLIENT_PASSWORD})
        assert login.status_code == 200, login.text
        portal = dashboard.client()
        assert (await portal.login("fuzzy", CLIENT_PASSWORD, path="/client/login")).status_code == 303
        # Every route the app serves over HTTP: pages and forms as well as both APIs.
        document = openapi_document(
            dashboard.app.routes, title="everything", description="", include=lambda _path: True
        )
        yield Fuzzed(dashboard, admin, portal, login.json()["token"], document, victim, hv, vm, pool)
    finally:
        await dashboard.stop()


def _session_caller(name: str, client: BrowserLikeClient, extra: Mapping[str, str] | None = None) -> Caller:
    assert client.csrf is not None
    csrf = {"X-CSRF-Token": client.csrf}

    def headers(path: str) -> Mapping[str, str]:
        return {**csrf, **(extra if extra is not None and path.startswith("/api/v1/") else {})}

    return Caller(name, cookies=dict(client.http.cookies.items()), headers=headers)


def _everything(_method: str, _path: str) -> bool:
    return True


def _portal_reaches(_method: str, path: str) -> bool:
    """The portal's pages and the broker API: what a portal user's inputs are read by."""
    return path.startswith("/client") or (
        path.startswith("/api/v1/") and not path.startswith("/api/v1/admin/")
    )


async def _run(
    fuzzed: Fuzzed,
    caller: Caller,
    modes: tuple[GenerationMode, ...],
    skip: set[tuple[str, str]],
    negate: Callable[[str, str], bool] = _everything,
) -> Findings:
    return await asyncio.to_thread(
        fuzz,
        fuzzed.document,
        fuzzed.dashboard.url,
        caller,
        examples=EXAMPLES,
        modes=modes,
        path_parameters={"user_id": fuzzed.victim},
        skip=lambda method, path: (method, path) in skip,
        negate=negate,
    )


async def _still_serving(fuzzed: Fuzzed) -> None:
    """The pages answer afterwards, to the sessions that were fuzzing."""
    assert (await fuzzed.admin.get("/")).status_code == 200
    assert (await fuzzed.admin.get("/api/v1/admin/vms")).status_code == 200
    assert (await fuzzed.portal.get("/client")).status_code == 200


# What the fuzzing found, each held by its own test (before the fuzzing changes the dashboard).


async def test_a_missing_iso_directory_is_the_admins_to_fix_not_a_server_error(fuzzed: Fuzzed) -> None:
    answer = await fuzzed.admin.get(f"/api/v1/admin/hypervisors/{fuzzed.hypervisor_id}/isos")
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "iso_dir_missing"
    assert "does not exist on the hypervisor" in answer.json()["message"]
    # A new VM naming an ISO there is refused on its field, as any ISO not on the list is.
    made = await fuzzed.admin.post(
        "/api/v1/admin/vms",
        json={"name": "iso-vm", "hypervisor_id": fuzzed.hypervisor_id, "iso_path": "/isos/x.iso"},
    )
    assert made.status_code == 400 and "iso_path" in made.json()["fields"], made.text


async def test_a_vm_whose_domain_was_removed_elsewhere_is_refused_saying_so(fuzzed: Fuzzed) -> None:
    vm = fuzzed.ghost_vm_id
    answer = await fuzzed.admin.post(f"/api/v1/admin/vms/{vm}/power", json={"action": "start"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "domain_missing"
    assert "ghost-vm has no domain on hv1" in answer.json()["message"]


async def test_a_desktop_whose_domain_was_removed_elsewhere_is_refused_until_an_admin_acts(
    fuzzed: Fuzzed,
) -> None:
    # Asking again cannot help, so it is no server error (a 503 says "try again").
    async with httpx.AsyncClient(base_url=fuzzed.dashboard.url, timeout=60) as http:
        answer = await http.post(
            f"/api/v1/pools/{fuzzed.pool_id}/desktop",
            json={},
            headers={"Authorization": f"Bearer {fuzzed.broker_token}"},
        )
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "desktop_failed"
    assert "ghost-vm has no domain on hv1" in answer.json()["message"]
    assert answer.json()["desktop"]["name"] == "ghost-vm"


async def test_a_console_of_a_vm_without_a_spice_display_is_refused_saying_so(fuzzed: Fuzzed) -> None:
    # test:///default's running domain "test" has no SPICE display: asking again cannot help.
    listed = await fuzzed.admin.get("/api/v1/admin/vms")
    vm = next(vm for vm in listed.json()["vms"] if vm["name"] == "test")
    answer = await fuzzed.admin.post(f"/api/v1/admin/vms/{vm['id']}/console", json={})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "no_spice_display"
    assert "has no SPICE display" in answer.json()["message"]


async def test_a_media_change_the_hypervisor_cannot_make_is_refused_saying_so(fuzzed: Fuzzed) -> None:
    # libvirt's test driver cannot change a device of a defined domain.
    listed = await fuzzed.admin.get("/api/v1/admin/vms")
    vm = next(vm for vm in listed.json()["vms"] if vm["name"] == "test")
    answer = await fuzzed.admin.post(f"/api/v1/admin/vms/{vm['id']}/media", json={"iso_path": None})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "not_supported"
    assert "cannot change its CD-ROM media" in answer.json()["message"]


@pytest.mark.parametrize("who", ["admin", "portal user", "anonymous"])
async def test_no_generated_request_gets_a_server_error(fuzzed: Fuzzed, who: str) -> None:
    modes: tuple[GenerationMode, ...] = MODES
    negate: Callable[[str, str], bool] = _everything
    if who == "admin":
        caller = _session_caller(who, fuzzed.admin)
    elif who == "portal user":
        caller = _session_caller(who, fuzzed.portal, {"Authorization": f"Bearer {fuzzed.broker_token}"})
        # Elsewhere the guard refuses it before any input is read: valid requests prove that.
        negate = _portal_reaches
    else:
        # Without credentials every guarded operation refuses before reading its inputs (the
        # hostile-input corpus covers bodies sent before authentication).
        caller, modes = Caller(who), (GenerationMode.POSITIVE,)
    skip = LOG_OUTS if who == "anonymous" else LOG_OUTS | LOG_INS
    if who == "admin":
        skip |= HYPERVISOR_RECORDS
    found = await _run(fuzzed, caller, modes, skip, negate)
    slowest = sorted(found.seconds.items(), key=lambda item: -item[1])[:12]
    print(f"{who}: {sum(found.sent.values())} requests, {dict(found.statuses)}, slowest {slowest}")
    assert found.failures == [], "\n".join(found.failures)
    operations = len(found.sent)
    described = sum(len(ops) for ops in fuzzed.document["paths"].values())
    assert operations == described - len(skip)
    # The requests reached the handlers, not only the guards.
    if who == "anonymous":
        assert set(found.statuses) & {200, 303, 401, 403}
    else:
        assert found.statuses[200] > 0, found.statuses
    await _still_serving(fuzzed)
