"""The VM table at fleet size in headless Chromium, on VM rows of rows-only hypervisors: search as
you type, filters, sorting and pages without a reload, a collapsed initial machine remembered
for the admin on another browser, a selection put into maintenance, and a burst of live state
changes drawn on the rows in view."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser_steps import log_in, mark_page, page_was_not_reloaded, severe_console_errors, wait_live
from tests.dashboard import RunningDashboard
from tests.services.browser import BrowserFactory
from tests.vms.fleet import build_fleet, set_states

pytestmark = pytest.mark.browser


def wait_for(driver: WebDriver, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    def probe(_: WebDriver) -> Any:
        try:
            return check()
        except StaleElementReferenceException:  # the table was just replaced
            return None

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(probe, what)


def summary(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "vm-summary").text)


def shown(driver: WebDriver) -> list[tuple[str, str]]:
    """(name, state) of every VM row in the table, in order."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#vm-table tr.vm-row')]"
        ".map((r) => [r.dataset.vmName, r.dataset.state]);"
    )
    return [(str(name), str(state)) for name, state in rows]


def browse(driver: WebDriver, dashboard: RunningDashboard, base1: int) -> None:
    log_in(driver, dashboard.url, "admin", dashboard.admin_password)
    driver.get(dashboard.url + "/vms")
    wait_live(driver)
    mark_page(driver)
    assert summary(driver) == "Showing 1\u2013100 of 150 VMs"

    # Search as you type: the table and the address follow, the page stays.
    search = driver.find_element(By.ID, "filter-q")
    search.send_keys("desk001")
    wait_for(driver, lambda: "matching" in summary(driver), "the search applied")
    names = [name for name, _ in shown(driver)]
    assert names and all("desk001" in name for name in names)
    assert driver.current_url.endswith("/vms?q=desk001")
    assert driver.switch_to.active_element == search, "typing kept the focus in the search field"

    # A state filter on top, then clearing every filter with the keyboard.
    Select(driver.find_element(By.ID, "filter-state")).select_by_value("running")
    wait_for(driver, lambda: "state=running" in driver.current_url, "the state filter applied")
    assert {state for _, state in shown(driver)} == {"running"}
    reset = driver.find_element(By.ID, "filter-reset")
    reset.send_keys(Keys.ENTER)
    wait_for(driver, lambda: summary(driver) == "Showing 1\u2013100 of 150 VMs", "every VM again")
    assert driver.find_element(By.ID, "filter-q").get_attribute("value") == ""

    # Sorting by a header, then the next page.
    driver.find_element(By.CSS_SELECTOR, 'th[aria-sort] a[href*="sort=state"]').send_keys(Keys.ENTER)
    wait_for(driver, lambda: "sort=state" in driver.current_url, "sorted by state")
    header = driver.find_element(By.XPATH, "//th[a[contains(@href, 'sort=state')]]")
    assert header.get_attribute("aria-sort") == "ascending"
    driver.find_element(By.CSS_SELECTOR, '#vm-pager a[rel="next"]').send_keys(Keys.ENTER)
    wait_for(driver, lambda: summary(driver).startswith("Showing 101\u2013150"), "page 2")
    driver.back()
    wait_for(driver, lambda: summary(driver).startswith("Showing 1\u2013100"), "page 1 again")
    driver.find_element(By.ID, "filter-reset").send_keys(Keys.ENTER)
    wait_for(driver, lambda: "sort=" not in driver.current_url and shown(driver)[0][0] == "fl-base1", "reset")

    # Collapse fl-base1: its desktops leave the table.
    driver.find_element(By.CSS_SELECTOR, f'[data-toggle-children="{base1}"]').send_keys(Keys.ENTER)
    wait_for(driver, lambda: "fl1-desk0001" not in dict(shown(driver)), "the desktops folded away")
    assert "Show its 70 VDI machines" in driver.find_element(By.ID, "vm-table").text
    assert page_was_not_reloaded(driver)


def select_and_act(driver: WebDriver) -> list[str]:
    """Select three rows (keyboard: Space on the checkboxes) and put them into maintenance."""
    boxes = driver.find_elements(By.CSS_SELECTOR, "#vm-table tr.vm-child input[data-select]")[:3]
    names = [str(box.find_element(By.XPATH, "./ancestor::tr").get_attribute("data-vm-name")) for box in boxes]
    for box in boxes:
        box.send_keys(Keys.SPACE)
    wait_for(driver, lambda: driver.find_element(By.ID, "bulk-count").text == "3 VMs selected", "3 selected")
    driver.find_element(By.CSS_SELECTOR, '[data-bulk="maintenance"][data-value="true"]').send_keys(Keys.ENTER)

    def flagged() -> bool:
        for name in names:
            row = driver.find_element(By.CSS_SELECTOR, f'tr[data-vm-name="{name}"]')
            if "maintenance" not in row.find_element(By.CSS_SELECTOR, ".vm-flags").text:
                return False
        return True

    wait_for(driver, flagged, "the maintenance badges")
    return names


def placeholder_for_a_missing_screen(driver: WebDriver) -> str:
    """A row picture whose address fails, as the table writes them; what it shows once the page
    has dealt with the failure."""
    driver.execute_script(
        "const img = document.createElement('img');"
        "img.className = 'thumb'; img.id = 'missing-screen';"
        "img.dataset.placeholder = '/vms/no-screen.svg';"
        "document.getElementById('vm-table').before(img);"
        "img.src = '/vms/0/thumbnail.png?v=1';"
    )

    def shown_placeholder() -> str | None:
        src, loaded = driver.execute_script(
            "const img = document.getElementById('missing-screen');"
            "return [new URL(img.src).pathname, img.complete && img.naturalWidth > 0];"
        )
        return str(src) if src == "/vms/no-screen.svg" and loaded else None

    return str(wait_for(driver, shown_placeholder, "the placeholder instead of a broken picture"))


async def test_the_vm_table_of_a_fleet_in_the_browser(
    dashboard: RunningDashboard, browser: BrowserFactory
) -> None:
    fleet = await build_fleet(dashboard.services.db, 150, hosts=2, simple=6, holders=10)
    base1 = fleet.initial_ids[0]
    driver = await asyncio.to_thread(browser.new, width=1400, height=1000)
    try:
        await asyncio.to_thread(browse, driver, dashboard, base1)
        names = await asyncio.to_thread(select_and_act, driver)
        assert len(names) == 3

        # A burst of live changes: fl-base2's desktops all stop. Those in view show it at once.
        desks = fleet.desktop_ids[70:]
        service = dashboard.services.vms
        assert service is not None
        for vm in await set_states(dashboard.services.db, desks, "shutoff"):
            service.ctx.publish_vm(vm, "state")

        def all_stopped() -> bool:
            states = [state for name, state in shown(driver) if name.startswith("fl2-desk")]
            badges = driver.execute_script(
                "return [...document.querySelectorAll("
                "'#vm-table tr[data-vm-name^=\"fl2-desk\"] [data-state-badge]')]"
                ".map((b) => b.textContent.trim());"
            )
            return bool(states) and set(states) == {"shutoff"} and set(badges) == {"shut off"}

        await asyncio.to_thread(wait_for, driver, all_stopped, "the burst drawn")
        assert await asyncio.to_thread(page_was_not_reloaded, driver)
        assert await asyncio.to_thread(severe_console_errors, driver) == []
        # A screen that cannot be had (gone from the hypervisor, or none taken) shows the placeholder.
        assert await asyncio.to_thread(placeholder_for_a_missing_screen, driver) == "/vms/no-screen.svg"
    finally:
        await asyncio.to_thread(browser.quit, driver)

    # The collapsed initial is the admin's, on any browser: a fresh profile finds it collapsed.
    other = await asyncio.to_thread(browser.new, width=1400, height=1000)
    try:

        def elsewhere() -> None:
            log_in(other, dashboard.url, "admin", dashboard.admin_password)
            other.get(dashboard.url + "/vms")
            assert "Show its 70 VDI machines" in other.find_element(By.ID, "vm-table").text
            assert "fl1-desk0001" not in dict(shown(other))

        await asyncio.to_thread(elsewhere)
    finally:
        await asyncio.to_thread(browser.quit, other)
