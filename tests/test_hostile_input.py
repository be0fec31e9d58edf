"""Hostile request bodies at every JSON endpoint: never a 5xx, always the error model.

Every unsafe route under ``/api`` and ``/client`` gets a corpus of malformed bodies
(deep nesting, lone surrogates, huge numbers, NaN, duplicate keys, invalid UTF-8,
wrong content types, 10 MB bodies), with and without credentials; every field of
every declared body model gets values of the wrong type, which must be refused
naming that field.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from starlette.convertors import IntegerConvertor
from starlette.routing import Route

from app.api import admin_bodies, bodies
from app.api.describe import request_bodies
from app.api.reader import MAX_JSON_BYTES
from tests import raw_http
from tests.broker.records import CLIENT_PASSWORD, add_client, add_connected_hypervisor, add_pool, add_vm
from tests.conftest import fresh_database, selected_database
from tests.dashboard import BrowserLikeClient, RunningDashboard, make_settings, start_dashboard

# The corpus runs on the database this run selects (its module fixture reads the choice itself).
pytestmark = pytest.mark.database

APP_DIR = Path(__file__).resolve().parent.parent / "app"
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
# Form log-ins and log-outs are no JSON endpoints (the body limit covers them, below).
NOT_JSON = {"/client/login", "/client/logout", "/api/v1/logout"}
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    label: str
    body: bytes
    content_type: str | None = JSON
    # Also sent without credentials (what could break a reader before authentication).
    before_auth: bool = False


def _deep(levels: int) -> bytes:
    return b'{"action":' * levels + b'"start"' + b"}" * levels


CORPUS = [
    Case("100000 nested arrays", b"[" * 100_000 + b"]" * 100_000, before_auth=True),
    Case("100000 nested objects", _deep(100_000)),
    Case("33 nested objects", _deep(33)),
    Case("lone surrogate value", b'{"username":"\\ud800","password":"x"}', before_auth=True),
    Case("lone surrogate key", b'{"\\udfff":1}'),
    Case("action list", b'{"action":["start"]}'),
    Case("action object", b'{"action":{"a":1}}'),
    Case("5000-digit integer", b'{"ssh_port":' + b"9" * 5000 + b"}", before_auth=True),
    Case("5000-digit float", b'{"first_boot_timeout":-1.' + b"1" * 5000 + b"}"),
    Case("huge exponent", b'{"memory_mib":1e999}'),
    Case("NaN", b'{"first_boot_timeout":NaN,"wait_first_boot":true}'),
    Case("-Infinity", b'{"memory_mib":-Infinity}'),
    Case("duplicate keys", b'{"action":"start","action":"start"}'),
    Case("invalid UTF-8", b'{"username":"\xed\xa0\x80","password":"\xff"}', before_auth=True),
    Case("UTF-16", '{"action":"start"}'.encode("utf-16")),
    Case("not JSON", b"{not json"),
    Case("top-level array", b'["start"]'),
    Case("top-level null", b"null"),
    Case("NUL byte", b'{"action":"start\x00"}'),
    Case("text/plain", b'{"action":"start"}', "text/plain", before_auth=True),
    Case("form", b"action=start&username=a&password=b", "application/x-www-form-urlencoded"),
    Case("latin-1 charset", b'{"action":"start"}', "application/json; charset=latin-1"),
    Case("many values", b'{"confirm_vms":[' + b'"a",' * 20_000 + b'"a"]}'),
    Case("over the JSON limit", b'{"name":"' + b"a" * (MAX_JSON_BYTES + 10) + b'"}', before_auth=True),
]  # fmt: skip

# Values of every kind; each is sent to every field whose model refuses it.
WRONG_VALUES: list[Any] = [
    "64", "maybe", "", 64, 1.5, -1, 2**63, True, None, ["start"], {"a": 1}, "x" * 2000,
]  # fmt: skip

# A body each model accepts; one field at a time is then replaced by a wrong value.
VALID: dict[type[BaseModel], dict[str, Any]] = {
    bodies.Login: {"username": "u", "password": "p", "realm": "local"},
    bodies.DesktopRequest: {"new": True},
    bodies.UserPower: {"action": "reboot"},
    bodies.HypervisorFields: {
        "name": "n", "transport": "test", "address": "", "ssh_port": 22, "ssh_user": "vdi",
        "libvirt_uri": "test:///default", "spice_address": "", "images_dir": "/i", "volatile_dir": "/v",
        "iso_dir": "/o", "maintenance": True,
    },
    bodies.HostKeyConfirmation: {"fingerprint": "SHA256:abc"},
    bodies.NewVmBody: {
        "name": "n", "hypervisor_id": 1, "kind": "simple", "vcpu_sockets": 1, "vcpu_cores": 1,
        "memory_mib": 64, "disk_size_gib": 1, "iso_path": "/i.iso", "boot_order": ["hd"],
        "network": "br0", "os_type": "linux", "disk_path": "/d.qcow2",
        "machine": "q35", "firmware": "uefi", "secure_boot": True, "tpm": True, "cpu_mode": "default",
        "disk_bus": "sata", "disk_cache": "none", "nic_model": "e1000e", "network_type": "bridge",
        "iso2_path": "/j.iso", "sound_model": "ich9", "video_heads": 2, "clipboard": False,
        "file_transfer": False, "usb_redirect": 1,
    },
    bodies.NewBatchBody: {"prefix": "p", "count": 2, "hypervisor_id": 1, "memory_mib": 64},
    bodies.NewInitialBody: {
        "name": "n", "source_id": 1, "memory_mib": 64, "vcpu_sockets": 1, "vcpu_cores": 1,
    },
    bodies.NewVdiBody: {"prefix": "p", "count": 1, "volatile": True},
    bodies.Populate: {"wait_first_boot": True, "first_boot_timeout": 10},
    bodies.VmPower: {"action": "reboot"},
    bodies.StartConfirmed: {"action": "start", "confirm_children": ["a"]},
    bodies.Publish: {"origin": "initial", "shutdown": True, "note": "n"},
    bodies.VersionTarget: {"version_id": 1},
    bodies.VersionDelete: {"confirm_files": ["/f"]},
    bodies.SnapshotTake: {"name": "s", "description": "d"},
    bodies.Flags: {"maintenance": True, "locked": False, "volatile": False},
    bodies.Classify: {"kind": "simple", "parent_id": 1},
    bodies.Media: {"iso_path": "/i.iso", "drive": 2},
    bodies.Policy: {"clipboard": True, "file_transfer": False, "usb_redirect": 2},
    bodies.FixedAddress: {"fixed_address": "192.0.2.10"},
    bodies.Delete: {"with_children": False, "remove_disks": False, "confirm_vms": ["a"], "confirm_files": []},
    bodies.BulkPower: {"vm_ids": [1], "action": "start"},
    bodies.BulkMaintenance: {"vm_ids": [1], "maintenance": True},
    bodies.BulkDeletePlan: {"vm_ids": [1], "remove_disks": False},
    bodies.BulkDelete: {"vm_ids": [1], "remove_disks": False, "confirm_vms": ["a"], "confirm_files": []},
    bodies.VmTableView: {"collapse": [1], "expand": [2], "density": "compact", "per_page": 100},
    bodies.PoolSchedule: {"kind": "keep_ready", "days": ["mon"], "at": "07:30", "until": "17:00", "count": 4},
    bodies.PoolScheduleChange: {"enabled": False},
    admin_bodies.NewToken: {"name": "n", "read_only": True, "expires_in_days": 30},
    bodies.PublishRunning: {"note": "n"},
    admin_bodies.PoolFields: {
        "name": "n", "description": "d", "lease_timeout_min": 5, "reset_on_handout": True, "keep_ready": 0,
        "max_per_user": 1, "maintenance": False, "failover_kind": "rdp", "failover_host": "h",
        "failover_domain": "d", "failover_pool": "p", "straight_to_desktop": False, "clipboard": False,
        "file_transfer": False, "usb_redirect": 0, "user_snapshots": 0,
    },
    admin_bodies.PoolVms: {"vm_ids": [1]},
    admin_bodies.PoolMembersChange: {"user_ids": [1], "group_ids": [1]},
    admin_bodies.NewAccount: {"username": "u", "role": "client", "display_name": "d", "email": "e"},
    admin_bodies.AccountChange: {"disabled": True},
    admin_bodies.NewGroup: {"name": "g", "description": "d"},
    admin_bodies.PortalChange: {"motd": "m", "straight_to_desktop": True},
}  # fmt: skip


@dataclass
class Hostile:
    """A dashboard with one of everything, and a caller for each kind of credential."""

    dashboard: RunningDashboard
    admin: BrowserLikeClient
    portal: BrowserLikeClient
    anonymous: httpx.AsyncClient
    token: str
    params: dict[str, int]
    # Ids for the routes that read no body and so do act (delete a pool, take a desktop out of it).
    victims: dict[tuple[str, str], dict[str, int]]

    def path(self, template: str, method: str = "GET") -> str:
        # Ids of kinds the fixture made none of: 1 (refused before anything is found, or not found).
        params = {**self.params, **self.victims.get((method, template), {})}
        return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(params.get(m.group(1), 1)), template)

    def credentials(self, template: str) -> tuple[httpx.AsyncClient, dict[str, str]]:
        if template.startswith("/api/v1/admin/"):
            assert self.admin.csrf is not None
            return self.admin.http, {"X-CSRF-Token": self.admin.csrf}
        if template.startswith("/client/"):
            assert self.portal.csrf is not None
            return self.portal.http, {"X-CSRF-Token": self.portal.csrf}
        if template == "/api/v1/login":
            return self.anonymous, {}
        return self.anonymous, {"Authorization": f"Bearer {self.token}"}

    async def send(self, method: str, template: str, case: Case, *, authenticated: bool) -> httpx.Response:
        client, headers = self.credentials(template) if authenticated else (self.anonymous, {})
        headers = {**headers, "Accept": JSON}
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        return await client.request(method, self.path(template, method), content=case.body, headers=headers)

    async def send_all(
        self, pending: list[tuple[str, str, Case]], *, authenticated: bool
    ) -> list[httpx.Response]:
        """Several at a time: the server's database waits overlap with the client's work."""
        gate = asyncio.Semaphore(6)

        async def one(method: str, template: str, case: Case) -> httpx.Response:
            async with gate:
                return await self.send(method, template, case, authenticated=authenticated)

        return await asyncio.gather(*(one(*item) for item in pending))

    def cookie_header(self, template: str) -> list[tuple[str, str]]:
        client, headers = self.credentials(template)
        cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        return [*headers.items(), *([("Cookie", cookies)] if cookies else [])]


@pytest.fixture(scope="module")
async def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Hostile]:
    """One dashboard for the module: every request here is refused, so none changes it."""
    tmp = tmp_path_factory.mktemp("hostile")
    url = fresh_database(selected_database(request.config), request, tmp)
    # Idle keep-alive connections are not closed under the corpus' feet: on a loaded machine
    # a pooled connection can wait longer than the default 5 s, and a request sent on one the
    # server is closing at that moment fails with a read error instead of an answer.
    settings = make_settings(tmp / "var", url, server={"keepalive_timeout": 120})
    dashboard = await start_dashboard(settings)
    anonymous = httpx.AsyncClient(base_url=dashboard.url, timeout=60)
    try:
        services = dashboard.services
        db = services.db
        hv = await add_connected_hypervisor(services.hypervisors, db)
        vm = await add_vm(db, "hostile-vm", hv, kind="simple")
        user = await add_client(db, "mallory")
        pool = await add_pool(db, "hostile-pool", [vm], [user])
        body = {"username": "mallory", "password": CLIENT_PASSWORD}
        login = await anonymous.post("/api/v1/login", json=body)
        assert login.status_code == 200, login.text
        portal = dashboard.client()
        assert (await portal.login("mallory", CLIENT_PASSWORD, path="/client/login")).status_code == 303
        ids = {"lease_id": 1, "op_id": 1, "schedule_id": 1, "version_id": 1, "name": 1}
        # Actions that read no body (reset a password, delete) do happen: on an account of their own,
        # never on the admin whose session the module uses (id 1 otherwise).
        keeper = await add_client(db, "keeper")
        params = {"vm_id": vm, "hypervisor_id": hv, "pool_id": pool, "user_id": keeper, **ids}
        victim_vm = await add_vm(db, "victim-vm", hv, kind="simple")
        victim_pool = {"pool_id": await add_pool(db, "victim-pool", [victim_vm], []), "vm_id": victim_vm}
        pools = "/api/v1/admin/pools/{pool_id:id}"
        victims = {
            ("DELETE", pools): victim_pool,
            ("DELETE", pools + "/vms/{vm_id:id}"): victim_pool,
            ("DELETE", "/api/v1/admin/users/{user_id:id}"): {"user_id": await add_client(db, "victim")},
        }
        admin = await dashboard.admin()
        yield Hostile(dashboard, admin, portal, anonymous, login.json()["token"], params, victims)
    finally:
        await anonymous.aclose()
        await dashboard.stop()


def json_endpoints(dashboard: RunningDashboard) -> list[tuple[str, str]]:
    found = []
    for route in dashboard.app.routes:
        if not isinstance(route, Route) or not route.path.startswith(("/api/", "/client/")):
            continue
        if route.path in NOT_JSON:
            continue
        found += [(method, route.path) for method in sorted(route.methods or ()) if method in UNSAFE]
    return found


def error_model_problem(response: httpx.Response, *, with_fields: bool) -> str | None:
    """What is wrong with a 4xx answer's body, or None when it is the error model."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:80]!r}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return f"no error code: {body!r:.120}"
    if not isinstance(body.get("message"), str) or not body["message"]:
        return f"no message: {body!r:.120}"
    fields = body.get("fields")
    if with_fields and not (
        isinstance(fields, dict) and fields and all(isinstance(v, str) for v in fields.values())
    ):
        return f"no fields: {body!r:.120}"
    return None


def problem(response: httpx.Response, *, reads_body: bool = True) -> str | None:
    """None when the answer is a refusal in the error model (or, where no body is read, a success)."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:120]!r}"
    if 400 <= response.status_code < 500:
        return error_model_problem(response, with_fields=response.status_code in (400, 413, 415))
    return f"accepted with {response.status_code}" if reads_body else None


async def test_no_view_reads_a_body_but_through_the_one_reader() -> None:
    readers = re.compile(r"request\.(json|body|stream)\(|json\.loads\(\s*(await\s+)?request")
    offenders = [
        f"{path.relative_to(APP_DIR)}:{number}"
        for path in APP_DIR.rglob("*.py")
        if path.name != "reader.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if readers.search(line)
    ]
    assert offenders == []


async def test_every_declared_body_belongs_to_a_json_endpoint(hostile: Hostile) -> None:
    endpoints = set(json_endpoints(hostile.dashboard))
    declared = request_bodies(hostile.dashboard.app.routes)
    assert set(declared) <= endpoints
    for models in declared.values():
        assert all(model in VALID for model in models)


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "authenticated"])
async def test_the_hostile_corpus_gets_the_error_model_and_never_a_server_error(
    hostile: Hostile, authenticated: bool
) -> None:
    endpoints = json_endpoints(hostile.dashboard)
    declared = request_bodies(hostile.dashboard.app.routes)
    cases = CORPUS if authenticated else [case for case in CORPUS if case.before_auth]
    pending = [(method, template, case) for method, template in endpoints for case in cases]
    answers = await hostile.send_all(pending, authenticated=authenticated)
    failures = [
        f"{method} {template} [{case.label}] -> {found}"
        for (method, template, case), response in zip(pending, answers, strict=True)
        if (found := problem(response, reads_body=(method, template) in declared)) is not None
    ]
    assert failures == []


async def test_a_wrong_type_in_any_field_is_refused_naming_that_field(hostile: Hostile) -> None:
    pending: list[tuple[str, str, Case]] = []
    named: list[tuple[type[BaseModel], str]] = []
    for (method, template), models in request_bodies(hostile.dashboard.app.routes).items():
        for model in models:
            for name in model.model_fields:
                for value in WRONG_VALUES:
                    body = {**VALID[model], name: value}
                    try:
                        model.model_validate(body, strict=True)
                        continue  # a value this field accepts
                    except ValidationError:
                        pass
                    case = Case(f"{name}={value!r:.20}", json.dumps(body).encode())
                    pending.append((method, template, case))
                    named.append((model, name))
    answers = await hostile.send_all(pending, authenticated=True)
    failures = []
    for (method, template, case), (model, name), response in zip(pending, named, answers, strict=True):
        found = problem(response)
        if found is None and name not in response.json().get("fields", {}):
            found = f"{response.status_code} without naming {name}: {response.text[:120]}"
        if found is not None:
            failures.append(f"{method} {template} {model.__name__} [{case.label}] -> {found}")
    assert failures == []


async def test_ten_megabyte_bodies_are_refused_before_they_are_read(hostile: Hostile) -> None:
    port = hostile.dashboard.settings.server.port
    chunk = b"[" * (256 * 1024)
    failures = []
    forms = [("POST", "/login"), ("POST", "/client/login")]
    declared = request_bodies(hostile.dashboard.app.routes)
    for method, template in [*json_endpoints(hostile.dashboard), *forms]:
        form = (method, template) in forms
        reads_body = (method, template) in declared or form
        headers = (
            [("Content-Type", FORM)] if form else [("Content-Type", JSON), *hostile.cookie_header(template)]
        )
        for chunked in (False, True):
            length = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(TEN_MB))
            path = hostile.path(template, method)
            request_head = raw_http.head(method, path, [*headers, ("Accept", JSON), length])
            answer = await raw_http.request(port, request_head, raw_http.repeat(chunk, 40), chunked=chunked)
            # Without a length, a route that reads no body answers at once; the rest is never read.
            refused = answer.status == 413 and json.loads(answer.body)["error"] == "body_too_large"
            answered = answer.status is not None and answer.status < 500 and chunked and not reads_body
            if not (refused or answered):
                failures.append(
                    f"{method} {template} chunked={chunked}: {answer.status} {answer.body[:80]!r}"
                )
            elif not answer.closed:
                failures.append(f"{method} {template} chunked={chunked}: the connection stayed open")
    assert failures == []


async def test_the_defects_found_on_a_fresh_install_are_refused_by_field(hostile: Hostile) -> None:
    admin, hv, vm = hostile.admin, hostile.params["hypervisor_id"], hostile.params["vm_id"]
    api = "/api/v1/admin"

    async def refused(path: str, body: dict[str, Any], field: str, method: str = "POST") -> None:
        csrf = {"X-CSRF-Token": admin.csrf or ""}
        response = await admin.http.request(method, path, json=body, headers=csrf)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid" and field in response.json()["fields"], response.text

    await refused(f"{api}/hypervisors/{hv}", {"maintenance": "maybe"}, "maintenance", "PATCH")
    ssh = {"name": "ssh1", "transport": "ssh", "address": "h"}
    await refused(f"{api}/hypervisors", {**ssh, "maintenance": "maybe"}, "maintenance")
    await refused(f"{api}/hypervisors", {**ssh, "libvirt_uri": "qemu:///system"}, "libvirt_uri")
    await refused(f"{api}/vms", {"name": "v", "hypervisor_id": hv, "memory_mib": "64"}, "memory_mib")
    await refused(f"{api}/vms/{vm}/power", {"action": ["start"]}, "action")
    row = (await admin.get(f"{api}/hypervisors/{hv}")).json()
    assert row["maintenance"] is False
    # The same type mistakes are not "fixed" for the broker API's clients either.
    http = hostile.anonymous
    bearer = {"Authorization": f"Bearer {hostile.token}"}
    power = await http.post(f"/api/v1/desktops/{vm}/power", json={"action": {"a": 1}}, headers=bearer)
    assert power.status_code == 400 and "action" in power.json()["fields"]
    surrogate = await http.post(
        "/api/v1/login", content=b'{"username":"\\ud800","password":"x"}', headers={"Content-Type": JSON}
    )
    assert surrogate.status_code == 400 and surrogate.json()["error"] == "invalid_json"
    missing = await http.post("/api/v1/login", json={})
    assert missing.status_code == 400 and set(missing.json()["fields"]) == {"username", "password"}


async def test_the_dashboard_still_serves_after_the_corpus(hostile: Hostile) -> None:
    await asyncio.gather(
        *(
            hostile.send("POST", "/api/v1/login", case, authenticated=False)
            for case in CORPUS
            for _ in range(3)
        )
    )
    login = await hostile.anonymous.post(
        "/api/v1/login", json={"username": "mallory", "password": CLIENT_PASSWORD}
    )
    assert login.status_code == 200


async def test_the_same_name_submitted_at_once_is_refused_never_a_server_error(hostile: Hostile) -> None:
    admin = hostile.admin
    body = {"name": "twin", "transport": "test", "libvirt_uri": "test:///default"}
    csrf = {"X-CSRF-Token": admin.csrf or ""}
    answers = await asyncio.gather(
        *(admin.http.post("/api/v1/admin/hypervisors", json=body, headers=csrf) for _ in range(6))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(201) == 1 and all(status in (201, 400, 409) for status in statuses), statuses
    assert all(error_model_problem(a, with_fields=False) is None for a in answers if a.status_code != 201)


PARAM = r"\{(\w+)(?::\w+)?\}"


async def test_an_id_too_large_for_the_database_is_not_found_on_every_route(hostile: Hostile) -> None:
    """A 20-digit id (past SQLite's and MariaDB's 64-bit integers) is a 404, never a server error."""
    huge = "9" * 20
    pending = []
    for route in hostile.dashboard.app.routes:
        if not isinstance(route, Route) or not any(c.startswith("{") for c in route.path.split("/")):
            continue
        ids = {
            name
            for name, kind in route.param_convertors.items()
            if isinstance(kind, IntegerConvertor) or name.endswith("_id")
        }
        if not ids:
            continue

        def filled(match: re.Match[str], ids: set[str] = ids) -> str:
            return huge if match.group(1) in ids else "1"

        path = re.sub(PARAM, filled, route.path)
        pending += [(method, route.path, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    assert len(pending) > 50

    async def one(method: str, template: str, path: str) -> tuple[str, int]:
        client, headers = hostile.credentials(template)
        response = await client.request(method, path, headers={**headers, "Accept": JSON}, content=b"{}")
        return f"{method} {path}", response.status_code

    answers = await asyncio.gather(*(one(*item) for item in pending))
    assert [(what, status) for what, status in answers if status >= 500] == []
    assert {status for _, status in answers} <= {401, 403, 404, 405, 409, 422, 400}, answers
