"""In a real browser, pages follow the live channel: no reload, reconnect after a drop, toasts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from app.db.schema import hypervisors
from app.live.hub import QUEUE_LIMIT
from tests.browser_steps import (
    By,
    log_in,
    mark_page,
    page_was_not_reloaded,
    row_state,
    severe_console_errors,
    toasts,
    wait,
    wait_live,
)
from tests.dashboard import RunningDashboard
from tests.services.browser import BrowserFactory

pytestmark = pytest.mark.browser


async def _in_thread(function: Callable[[], Any]) -> Any:
    # Selenium blocks; the dashboard runs on this event loop, so the browser must wait elsewhere.
    return await asyncio.to_thread(function)


async def test_the_hypervisor_list_follows_live_messages_and_survives_a_dropped_socket(
    dashboard: RunningDashboard, browser: BrowserFactory
) -> None:
    db, hub = dashboard.services.db, dashboard.services.hub
    loop = asyncio.get_running_loop()
    hv_id = await db.execute(
        hypervisors.insert().values(
            name="sim", transport="test", libvirt_uri="test:///default", state="unknown"
        )
    )

    def from_browser_thread(function: Callable[..., Any], *args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(function(*args), loop).result(timeout=30)

    async def publish(*args: Any, **kwargs: Any) -> None:
        hub.publish(*args, **kwargs)

    async def flood() -> None:
        for index in range(QUEUE_LIMIT + 10):
            hub.publish("operation", {"id": index})

    async def set_state(state: str, reason: str) -> None:
        await db.execute(
            hypervisors.update().where(hypervisors.c.id == hv_id).values(state=state, state_reason=reason)
        )

    def scenario() -> None:
        with browser.session() as driver:
            log_in(driver, dashboard.url, "admin", dashboard.admin_password)
            driver.get(f"{dashboard.url}/hypervisors?toast=Hello+there&keep=1")
            wait_live(driver)
            mark_page(driver)
            assert "Hello there" in toasts(driver)[0]
            assert driver.current_url.endswith("/hypervisors?keep=1"), "the toast left the address bar"
            assert row_state(driver, hv_id) == ("Unknown", "")

            # A state change arrives as a message and changes the row in place.
            from_browser_thread(set_state, "down", "libvirt not running")
            from_browser_thread(
                publish, "hypervisor", {"id": hv_id, "state": "down", "reason": "libvirt not running"}
            )
            wait(driver).until(lambda d: row_state(d, hv_id) == ("Down", "libvirt not running"))

            # The server drops a lagging socket; the page reconnects and re-reads what it missed.
            from_browser_thread(flood)
            wait(driver).until(
                lambda d: d.find_element(By.ID, "live-indicator").get_attribute("data-state") != "connected"
            )
            from_browser_thread(set_state, "up", "")
            wait_live(driver)
            wait(driver).until(lambda d: row_state(d, hv_id) == ("Up", ""))

            # A hypervisor added elsewhere appears; one removed elsewhere disappears.
            new_id = from_browser_thread(
                db.execute,
                hypervisors.insert().values(
                    name="sim2", transport="test", libvirt_uri="test:///default", state="up"
                ),
            )
            from_browser_thread(publish, "hypervisor", {"id": new_id, "event": "added", "state": "up"})
            wait(driver).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, f'tr[data-hypervisor-id="{new_id}"]')) == 1
            )
            from_browser_thread(publish, "hypervisor", {"id": hv_id, "event": "removed", "removed": True})
            wait(driver).until(
                lambda d: not d.find_elements(By.CSS_SELECTOR, f'tr[data-hypervisor-id="{hv_id}"]')
            )

            assert page_was_not_reloaded(driver)
            assert severe_console_errors(driver) == []

    await _in_thread(scenario)


async def test_an_expired_session_stops_reconnecting_and_offers_to_log_in(
    dashboard_factory: Any, browser: BrowserFactory
) -> None:
    running: RunningDashboard = await dashboard_factory(security={"session_max_age": 3})

    def scenario() -> None:
        with browser.session() as driver:
            log_in(driver, running.url, "admin", running.admin_password)
            wait_live(driver)
            mark_page(driver)
            wait_live(driver, "ended", timeout=20)
            indicator = driver.find_element(By.ID, "live-indicator")
            assert indicator.text == "Session ended: log in again"
            assert str(indicator.get_attribute("href")).endswith("/login?next=%2F")
            assert page_was_not_reloaded(driver)

    await _in_thread(scenario)


async def test_the_overview_figures_follow_changes(
    dashboard: RunningDashboard, browser: BrowserFactory
) -> None:
    db, hub = dashboard.services.db, dashboard.services.hub
    loop = asyncio.get_running_loop()

    async def add_down_hypervisor() -> None:
        hv_id = await db.execute(
            hypervisors.insert().values(
                name="far", transport="test", libvirt_uri="test:///default", state="down"
            )
        )
        hub.publish("hypervisor", {"id": hv_id, "event": "added", "state": "down", "reason": "unreachable"})

    def figure(driver: Any, name: str) -> str:
        return str(driver.find_element(By.CSS_SELECTOR, f'[data-figure="{name}"]').text)

    def scenario() -> None:
        with browser.session() as driver:
            log_in(driver, dashboard.url, "admin", dashboard.admin_password)
            wait_live(driver)
            mark_page(driver)
            assert figure(driver, "hypervisors_total") == "0"
            assert driver.find_element(By.ID, "getting-started").is_displayed()
            asyncio.run_coroutine_threadsafe(add_down_hypervisor(), loop).result(timeout=30)
            wait(driver).until(lambda d: figure(d, "hypervisors_total") == "1")
            wait(driver).until(lambda d: figure(d, "hypervisors_down") == "1")
            assert page_was_not_reloaded(driver)
            assert severe_console_errors(driver) == []

    await _in_thread(scenario)
