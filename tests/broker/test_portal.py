"""The client portal and the local-versus-directory name rule, with a real slapd."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from kvm_vdi_client.api import BrokerClient, InvalidCredentials
from kvm_vdi_client.config import DashboardConfig

from app.auth.accounts import create_local_user
from app.broker.preferences import MOTD, set_preference
from app.db.records import UserRecord, fetch_records
from app.db.schema import directory_groups, pool_groups, users
from tests.broker.directory_servers import SUFFIX, USERS, DirectoryServer
from tests.broker.records import CLIENT_PASSWORD, add_client, add_hypervisor, add_pool, add_vm
from tests.dashboard import BrowserLikeClient, DashboardFactory, RunningDashboard
from tests.rows import the_record

LOCAL_DAVE_PASSWORD = "dave-local-password"


def directory_settings(server: DirectoryServer) -> dict[str, Any]:
    return {
        "kind": "ldap",
        "url": server.url,
        "allow_cleartext": True,  # the suite's slapd, on loopback
        "base_dn": SUFFIX,
        "user_dn_template": f"uid={{username}},{server.people_dn}",
    }


async def portal_login(
    client: BrowserLikeClient, username: str, password: str, realm: str | None = None
) -> httpx.Response:
    await client.refresh_csrf("/client/login")
    form = {"username": username, "password": password, **({"realm": realm} if realm else {})}
    response = await client.post("/client/login", form)
    if response.status_code == 303:
        await client.refresh_csrf("/client")
    return response


async def test_directory_user_logs_in_gets_a_user_row_and_sees_the_pool_of_its_group(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    dashboard = await dashboard_factory(directory=directory_settings(ldap_directory))
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    pool_id = await add_pool(
        db, "Staff desktops", [await add_vm(db, "st0", hv), await add_vm(db, "st1", hv)], []
    )
    group_id = await db.execute(directory_groups.insert().values(name="vdi-staff"))
    await db.execute(pool_groups.insert().values(pool_id=pool_id, group_id=group_id))
    await add_pool(db, "Other", [await add_vm(db, "o0", hv)], [])

    alice = dashboard.client()
    response = await portal_login(alice, "alice", USERS["alice"][0])
    assert response.status_code == 303 and response.headers["location"] == "/client?from=login"
    page = await alice.get("/client")
    assert page.status_code == 200
    assert "Staff desktops" in page.text and "Other" not in page.text
    row = await the_record(db, UserRecord, users.select().where(users.c.username == "alice"))
    assert (row.source, row.role, row.display_name, row.email, row.password_hash) == (
        "directory",
        "client",
        "Alice Liddell",
        "alice@example.org",
        None,
    )
    bob = dashboard.client()
    assert (await portal_login(bob, "bob", USERS["bob"][0])).status_code == 303
    assert "Staff desktops" not in (await bob.get("/client")).text


async def test_portal_refuses_wrong_and_empty_passwords(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    dashboard = await dashboard_factory(directory=directory_settings(ldap_directory))
    client = dashboard.client()
    wrong = await portal_login(client, "alice", "not-the-password")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    before = len(ldap_directory.bind_names())
    empty = await portal_login(client, "alice", "")
    assert empty.status_code == 400 and "Enter your user name and password" in empty.text
    assert ldap_directory.bind_names()[before:] == []


async def test_local_and_directory_accounts_of_the_same_name_never_shadow_each_other(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    """dave exists locally and in the directory: each password opens its own account in its own realm only."""
    dashboard = await dashboard_factory(directory=directory_settings(ldap_directory))
    db = dashboard.services.db
    local_id = await create_local_user(db, "dave", LOCAL_DAVE_PASSWORD, role="client")
    directory_password = USERS["dave"][0]
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:

        async def login(password: str, realm: str | None) -> httpx.Response:
            body = {"username": "dave", "password": password, **({"realm": realm} if realm else {})}
            return await http.post("/api/v1/login", json=body)

        as_directory = await login(directory_password, "directory")
        assert as_directory.status_code == 200 and as_directory.json()["user"]["source"] == "directory"
        as_local = await login(LOCAL_DAVE_PASSWORD, "local")
        assert as_local.status_code == 200 and as_local.json()["user"]["source"] == "local"
        # Crossed passwords open nothing: no fallback from one realm to the other.
        assert (await login(LOCAL_DAVE_PASSWORD, "directory")).status_code == 401
        assert (await login(directory_password, "local")).status_code == 401
        # Without a realm, a name with a local portal account is that account, and only that one.
        assert (await login(LOCAL_DAVE_PASSWORD, None)).json()["user"]["source"] == "local"
        assert (await login(directory_password, None)).status_code == 401
    rows = await fetch_records(db, UserRecord, users.select().where(users.c.username == "dave"))
    assert sorted(row.source for row in rows) == ["directory", "local"]
    assert local_id in {row.id for row in rows}
    client = dashboard.client()
    assert (await portal_login(client, "dave", LOCAL_DAVE_PASSWORD, realm="local")).status_code == 303
    assert (await portal_login(dashboard.client(), "dave", directory_password)).status_code == 401
    directory_dave = dashboard.client()
    assert (await portal_login(directory_dave, "dave", directory_password, "directory")).status_code == 303


async def test_a_local_user_logs_in_through_the_thin_clients_call_with_a_directory_configured(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    """The launcher sends no realm: a local account still logs in, and directory users too."""
    dashboard = await dashboard_factory(directory=directory_settings(ldap_directory))
    await add_client(dashboard.services.db, "kiosk-hall-1")
    launcher = BrokerClient(DashboardConfig(url=dashboard.url, timeout=30))
    local = await asyncio.to_thread(launcher.login, "kiosk-hall-1", CLIENT_PASSWORD)
    assert (local.username, local.source) == ("kiosk-hall-1", "local")
    assert await asyncio.to_thread(launcher.pools) == ()
    directory = await asyncio.to_thread(launcher.login, "alice", USERS["alice"][0])
    assert (directory.username, directory.source) == ("alice", "directory")
    with pytest.raises(InvalidCredentials):
        await asyncio.to_thread(launcher.login, "kiosk-hall-1", USERS["alice"][0])
    # The rare case: a directory user whose name also has a local account names the realm.
    await add_client(dashboard.services.db, "bob")
    named = BrokerClient(DashboardConfig(url=dashboard.url, timeout=30, realm="directory"))
    assert (await asyncio.to_thread(named.login, "bob", USERS["bob"][0])).source == "directory"
    with pytest.raises(InvalidCredentials):
        await asyncio.to_thread(launcher.login, "bob", USERS["bob"][0])


async def test_without_a_directory_logins_are_local(dashboard: RunningDashboard) -> None:
    await add_client(dashboard.services.db, "lou")
    client = dashboard.client()
    assert (await portal_login(client, "lou", CLIENT_PASSWORD)).status_code == 303
    refused = await portal_login(dashboard.client(), "lou", CLIENT_PASSWORD, realm="directory")
    assert refused.status_code == 400


async def test_login_page_shows_the_message_of_the_day(dashboard: RunningDashboard) -> None:
    await set_preference(dashboard.services.db, MOTD, "Maintenance on Friday <b>18:00</b>")
    page = await dashboard.client().get("/client/login")
    assert "Maintenance on Friday &lt;b&gt;18:00&lt;/b&gt;" in page.text


async def test_portal_pages_need_a_client_session(dashboard: RunningDashboard) -> None:
    anonymous = dashboard.client()
    response = await anonymous.get("/client")
    assert response.status_code == 303 and response.headers["location"].startswith("/client/login")
    admin = await dashboard.admin()
    assert (await admin.get("/client")).status_code == 403


async def test_portal_desktop_request_needs_csrf(dashboard: RunningDashboard) -> None:
    db = dashboard.services.db
    hv = await add_hypervisor(db)
    uid = await add_client(db, "mo")
    pool_id = await add_pool(db, "p", [await add_vm(db, "m0", hv)], [uid])
    client = dashboard.client()
    await portal_login(client, "mo", CLIENT_PASSWORD)
    without = await client.http.post(
        f"/client/pools/{pool_id}/desktop", headers={"Accept": "application/json"}
    )
    assert without.status_code == 403
