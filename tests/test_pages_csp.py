"""Every page works under the Content-Security-Policy: no inline script or event handler anywhere.

The policy (``script-src 'self'``) silently blocks inline code, so a page relying on it
breaks without an error a user would understand. Every GET route of the app is rendered
as an administrator, as a portal user and anonymously, with records for its path
parameters, and every HTML answer is read tag by tag.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.alert import Alert
from starlette.routing import Route

from app.broker.pools import get_pool
from app.broker.schedules import ScheduleSpec
from app.db.schema import directory_groups, leases
from tests.broker.records import CLIENT_PASSWORD, add_client, add_connected_hypervisor, add_pool, add_vm
from tests.browser_steps import By, log_in, severe_console_errors, wait
from tests.dashboard import BrowserLikeClient, RunningDashboard
from tests.services.browser import BrowserFactory

# Answers that are not pages whatever the data (no screenshot of a stopped VM yet).
NOT_PAGES = {"/vms/{vm_id:id}/thumbnail.png"}


@dataclass
class InlineCode(HTMLParser):
    """Collects what a ``script-src 'self'`` policy would block."""

    found: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}={value}>")
        if tag == "script" and "src" not in values and values.get("type") != "application/json":
            self.found.append("<script> without src")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    parser.close()
    return parser.found


@dataclass
class Records:
    ids: dict[str, int | str]

    def path(self, template: str) -> str:
        return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: str(self.ids[m.group(1)]), template)


async def _records(dashboard: RunningDashboard) -> Records:
    services = dashboard.services
    db = services.db
    hv_id = await add_connected_hypervisor(services.hypervisors, db, "pages-hv")
    client_id = await add_client(db, "pages-user")
    # test:///default's own running domain: the hypervisor's sync, whenever it comes, finds it
    # there and keeps it a desktop the allocator hands out (a row without a domain would turn
    # "unknown" and never be handed out).
    vm_id = await add_vm(db, "test", hv_id, kind="simple", state="running")
    pool_id = await add_pool(db, "pages-pool", [vm_id], [client_id], reset_on_handout=False)
    await db.execute(directory_groups.insert().values(name="pages-group"))
    pool = await get_pool(db, pool_id)
    assert pool is not None
    claim = await services.broker.allocator.claim(pool, client_id, client_address="192.0.2.1")
    assert await db.fetch_one(leases.select().where(leases.c.id == claim.lease_id)) is not None
    return Records(
        {
            "hypervisor_id": hv_id,
            "vm_id": vm_id,
            "pool_id": pool_id,
            "user_id": client_id,
            "op_id": 1,
            "language": "lt",
            "schedule_id": await services.schedules.store.create(
                pool_id,
                ScheduleSpec.parse({"kind": "power_off", "days": ["mon"], "at": "20:00"}),
                actor="admin",
                now=dashboard.clock.now(),
            ),
            "version_id": 1,
        }
    )


def _get_routes(dashboard: RunningDashboard) -> list[tuple[str, str | None]]:
    return [
        (route.path, getattr(route.endpoint, "required_role", None))
        for route in dashboard.app.routes
        if isinstance(route, Route) and "GET" in (route.methods or ())
    ]


async def test_no_page_has_inline_code_for_any_role(dashboard: RunningDashboard) -> None:
    records = await _records(dashboard)
    admin = await dashboard.admin()
    client = dashboard.client()
    # The portal user reads Lithuanian: every page renders in a translation as well.
    client.http.headers["Accept-Language"] = "lt"
    assert (await client.login("pages-user", CLIENT_PASSWORD, path="/client/login")).status_code == 303
    anonymous = dashboard.client()
    viewers: dict[str, BrowserLikeClient] = {"admin": admin, "client": client, "anonymous": anonymous}

    pages = 0
    for template, role in _get_routes(dashboard):
        path = records.path(template)
        for who, viewer in viewers.items():
            response = await viewer.get(path)
            is_page = response.headers.get("content-type", "").startswith("text/html")
            if role == who and template not in NOT_PAGES and is_page:
                assert response.status_code == 200, (who, path, response.status_code)
            if is_page:
                pages += 1
                assert inline_code(response.text) == [], (who, path)
    # Every admin page, every portal page, the log-in pages and the refusals were read.
    assert pages >= 40, pages


def test_the_scan_finds_what_the_policy_blocks() -> None:
    assert inline_code('<form onsubmit="return confirm(1)"></form>') == ["<form onsubmit=...>"]
    assert inline_code("<script>alert(1)</script>") == ["<script> without src"]
    assert inline_code('<a href=" JavaScript:alert(1)">x</a>') != []
    assert (
        inline_code('<script src="/static/js/ui.js"></script><script type="application/json">{}</script>')
        == []
    )


@pytest.mark.browser
async def test_ending_a_session_asks_first_and_the_answer_counts(
    dashboard: RunningDashboard, browser: BrowserFactory
) -> None:
    """The Sessions page's confirmation runs under the policy: "cancel" keeps the lease, "OK" ends it."""
    records = await _records(dashboard)
    db = dashboard.services.db

    async def lease_ended() -> bool:
        row = await db.fetch_one(leases.select().where(leases.c.vm_id == records.ids["vm_id"]))
        return row is not None and row["ended_at"] is not None

    def end_session(accept: bool) -> str:
        driver.find_element(By.CSS_SELECTOR, "#sessions-table button[type=submit]").click()
        alert = wait(driver, 10).until(lambda d: _alert(d))
        assert isinstance(alert, Alert)
        text = str(alert.text)
        if accept:
            alert.accept()
            wait(driver).until(lambda d: d.find_elements(By.ID, "no-sessions"))
        else:
            alert.dismiss()
        return text

    driver = await asyncio.to_thread(browser.new, width=1200, height=800)
    try:
        await asyncio.to_thread(log_in, driver, dashboard.url, "admin", dashboard.admin_password)
        await asyncio.to_thread(driver.get, f"{dashboard.url}/sessions")
        question = await asyncio.to_thread(end_session, False)
        assert "End the session of pages-user on test?" in question
        assert not await lease_ended(), "cancelled: the session goes on"
        await asyncio.to_thread(end_session, True)
        assert await lease_ended()
        assert severe_console_errors(driver) == []
    finally:
        await asyncio.to_thread(browser.quit, driver)


def _alert(driver: WebDriver) -> Alert | None:
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None
