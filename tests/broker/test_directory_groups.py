"""A directory user's groups live with the session on the server and are read again while it lasts.

At log-in the groups come from the directory and are stored in the session row (nothing
the browser sends can add one); every ``directory.groups_recheck`` seconds of use the
service account reads the account again. The dashboard's clock is moved on by the
interval instead of waiting for it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import ldap3
import sqlalchemy as sa
from ldap3.core.exceptions import LDAPNoSuchObjectResult

from app.auth.session_cookie import COOKIE_NAME
from app.db.schema import directory_groups, pool_groups, sessions
from tests.broker.directory_servers import ADMIN_DN, SERVICE_DN, SERVICE_PASSWORD, USERS, DirectoryServer
from tests.broker.records import add_hypervisor, add_pool, add_vm
from tests.broker.test_portal import directory_settings as portal_directory
from tests.dashboard import BrowserLikeClient, DashboardFactory, RunningDashboard

RECHECK = 900
STAFF_POOL = "Staff desktops"


def directory_settings(server: DirectoryServer) -> dict[str, Any]:
    """The portal tests' directory, found through the service account, read again every RECHECK s."""
    template_free = {k: v for k, v in portal_directory(server).items() if k != "user_dn_template"}
    return {
        **template_free,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "groups_recheck": RECHECK,
    }


async def staff_pool_dashboard(factory: DashboardFactory, server: DirectoryServer) -> RunningDashboard:
    dashboard = await factory(directory=directory_settings(server))
    db = dashboard.services.db
    pool_id = await add_pool(db, STAFF_POOL, [await add_vm(db, "st0", await add_hypervisor(db))], [])
    group_id = await db.execute(directory_groups.insert().values(name="vdi-staff"))
    await db.execute(pool_groups.insert().values(pool_id=pool_id, group_id=group_id))
    return dashboard


async def portal_login(dashboard: RunningDashboard, name: str, password: str) -> BrowserLikeClient:
    client = dashboard.client()
    assert (await client.login(name, password, path="/client/login")).status_code == 303
    return client


def as_if_the_interval_passed(dashboard: RunningDashboard) -> None:
    dashboard.clock.advance(RECHECK + 5)


@contextmanager
def member_removed(server: DirectoryServer, group: str, username: str) -> Iterator[None]:
    """``username`` out of ``group`` (a placeholder member keeps the groupOfNames valid), then back."""
    admin, user_dn = server.admin(), server.user_dn(username)
    admin.modify(
        server.group_dn(group), {"member": [(ldap3.MODIFY_ADD, [ADMIN_DN]), (ldap3.MODIFY_DELETE, [user_dn])]}
    )
    try:
        yield
    finally:
        admin.modify(
            server.group_dn(group),
            {"member": [(ldap3.MODIFY_ADD, [user_dn]), (ldap3.MODIFY_DELETE, [ADMIN_DN])]},
        )
        admin.unbind()


@contextmanager
def member_added(server: DirectoryServer, group: str, username: str) -> Iterator[None]:
    admin, user_dn = server.admin(), server.user_dn(username)
    admin.modify(server.group_dn(group), {"member": [(ldap3.MODIFY_ADD, [user_dn])]})
    try:
        yield
    finally:
        admin.modify(server.group_dn(group), {"member": [(ldap3.MODIFY_DELETE, [user_dn])]})
        admin.unbind()


async def test_a_user_taken_out_of_a_group_loses_its_pool_at_the_next_reading(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    dashboard = await staff_pool_dashboard(dashboard_factory, ldap_directory)
    alice = await portal_login(dashboard, "alice", USERS["alice"][0])
    assert STAFF_POOL in (await alice.get("/client")).text
    stored = await dashboard.services.db.fetch_val(sa.select(sessions.c.groups_json))
    assert "vdi-staff" in stored, "the groups are in the session row, not the cookie"

    with member_removed(ldap_directory, "vdi-staff", "alice"):
        assert STAFF_POOL in (await alice.get("/client")).text, "until the interval has passed"
        as_if_the_interval_passed(dashboard)
        assert STAFF_POOL not in (await alice.get("/client")).text
        stored = await dashboard.services.db.fetch_val(sa.select(sessions.c.groups_json))
        assert "vdi-staff" not in stored and "vdi-users" in stored

    # Back in the group: the next reading gives the pool back within the same session.
    as_if_the_interval_passed(dashboard)
    assert STAFF_POOL in (await alice.get("/client")).text


async def test_an_account_the_directory_no_longer_has_loses_its_session(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    dashboard = await staff_pool_dashboard(dashboard_factory, ldap_directory)
    admin = ldap_directory.admin()
    leaver_dn = ldap_directory.user_dn("leaver")
    admin.add(
        leaver_dn,
        ["inetOrgPerson"],
        {"uid": "leaver", "cn": "Lee Leaver", "sn": "Leaver", "userPassword": "leaver-secret-9"},
    )
    try:
        leaver = await portal_login(dashboard, "leaver", "leaver-secret-9")
        assert (await leaver.get("/client")).status_code == 200
        admin.delete(leaver_dn)
        assert (await leaver.get("/client")).status_code == 200, "until the interval has passed"
        as_if_the_interval_passed(dashboard)
        gone = await leaver.get("/client")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/client/login")
        left = await dashboard.services.db.fetch_val(sa.select(sa.func.count()).select_from(sessions))
        assert left == 0
    finally:
        with contextlib.suppress(LDAPNoSuchObjectResult):
            admin.delete(leaver_dn)
        admin.unbind()


async def test_a_broker_api_token_follows_the_directory_too(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    """A thin client's token keeps its groups only until the next reading, like a browser session."""
    dashboard = await staff_pool_dashboard(dashboard_factory, ldap_directory)
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
        answer = await http.post("/api/v1/login", json={"username": "alice", "password": USERS["alice"][0]})
        assert answer.status_code == 200
        headers = {"Authorization": f"Bearer {answer.json()['token']}"}

        async def pools() -> list[str]:
            listed = await http.get("/api/v1/pools", headers=headers)
            assert listed.status_code == 200
            return [pool["name"] for pool in listed.json()["pools"]]

        assert STAFF_POOL in await pools()
        with member_removed(ldap_directory, "vdi-staff", "alice"):
            assert STAFF_POOL in await pools(), "until the interval has passed"
            as_if_the_interval_passed(dashboard)
            assert STAFF_POOL not in await pools()


async def test_a_member_of_forty_groups_logs_in_and_keeps_a_cookie_of_the_usual_size(
    dashboard_factory: DashboardFactory, ldap_directory: DirectoryServer
) -> None:
    """Active Directory users are often in dozens of groups: however many, they live in the
    session row, and the cookie stays the same 256-bit id as anybody's."""
    dashboard = await staff_pool_dashboard(dashboard_factory, ldap_directory)
    admin = ldap_directory.admin()
    user_dn = ldap_directory.user_dn("grouped")
    groups = [f"vdi-course-{index:02d}-with-a-long-descriptive-name" for index in range(40)]
    admin.add(
        user_dn,
        ["inetOrgPerson"],
        {"uid": "grouped", "cn": "Gail Grouped", "sn": "Grouped", "userPassword": "grouped-secret-9"},
    )
    try:
        for cn in groups:
            assert admin.add(ldap_directory.group_dn(cn), ["groupOfNames"], {"cn": cn, "member": [user_dn]})
        with member_added(ldap_directory, "vdi-staff", "grouped"):
            user = await portal_login(dashboard, "grouped", "grouped-secret-9")
            assert STAFF_POOL in (await user.get("/client")).text
            cookie = user.http.cookies.get(COOKIE_NAME)
            assert cookie is not None and re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie)
            stored = json.loads(await dashboard.services.db.fetch_val(sa.select(sessions.c.groups_json)))
            assert {*groups, "vdi-staff"} <= set(stored)
    finally:
        for cn in groups:
            with contextlib.suppress(LDAPNoSuchObjectResult):
                admin.delete(ldap_directory.group_dn(cn))
        with contextlib.suppress(LDAPNoSuchObjectResult):
            admin.delete(user_dn)
        admin.unbind()
