"""The image versions page in headless Chromium: publish, roll out and delete a version, each
change shown live (no reload), with the confirmations the page asks for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.browser_steps import By, log_in, mark_page, page_was_not_reloaded, severe_console_errors
from tests.services.browser import BrowserFactory
from tests.vms.test_initial_vdi import make_initial_with_children
from tests.vms.world import VmWorld
from tests.waiting import NeverHappened, eventually

pytestmark = [pytest.mark.kvm, pytest.mark.browser]


async def until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str, timeout: float = 60) -> Any:
    def look() -> Any:
        try:
            return check(driver)
        except StaleElementReferenceException:  # the panel was just fetched again
            return None

    try:
        return await eventually(lambda: asyncio.to_thread(look), what, timeout=timeout)
    except NeverHappened as failure:
        raise AssertionError(f"{failure}; console: {driver.get_log('browser')}") from None


def text(driver: WebDriver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text.strip() if found else ""


def click(driver: WebDriver, selector: str) -> bool:
    found = [
        e for e in driver.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed() and e.is_enabled()
    ]
    if found:
        found[0].click()
    return bool(found)


async def test_publish_roll_out_and_delete_a_version_on_the_live_versions_page(
    vm_world: VmWorld, browser: BrowserFactory
) -> None:
    world = vm_world
    initial_id, _ = await make_initial_with_children(world, 2, guest="banner")

    driver = await asyncio.to_thread(browser.new, width=1300, height=1200)
    try:
        await asyncio.to_thread(log_in, driver, world.dashboard.url, "admin", world.dashboard.admin_password)
        await asyncio.to_thread(driver.get, f"{world.dashboard.url}/vms/{initial_id}/versions")
        assert text(driver, "#image-target") == "v1"
        assert text(driver, "#image-rollout-count") == "2 of 2"
        mark_page(driver)

        await asyncio.to_thread(click, driver, "#publish-open")
        await until(driver, lambda d: click(d, "#publish-ok"), "the publish dialog")
        await until(driver, lambda d: text(d, "#image-target") == "v2", "v2 as the target, live")
        await until(driver, lambda d: text(d, "#image-rollout-count") == "0 of 2", "both behind")
        badges = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-child-version]")]
        assert badges == ["v1", "v1"]

        await until(driver, lambda d: click(d, '[data-image-action="rollout"]'), "the roll-out button")
        confirm = await until(driver, lambda d: text(d, "#confirm-text"), "the confirmation")
        assert world.name("desk01") in confirm and world.name("desk02") in confirm, "it names the machines"
        await until(driver, lambda d: click(d, "#confirm-ok"), "the confirm button")
        await until(driver, lambda d: text(d, "#image-rollout-count") == "2 of 2", "both on v2, live")

        v1_delete = '#versions-table tr[data-version-label="v1"] [data-image-action="delete"]'
        await until(driver, lambda d: click(d, v1_delete), "v1's delete button")
        planned = await until(driver, lambda d: text(d, "#version-delete-files"), "the plan")
        assert planned == str(world.h0.images_dir / f"{world.name('init')}.v1.qcow2")
        await until(driver, lambda d: click(d, "#version-delete-ok"), "the delete button")
        await until(
            driver,
            lambda d: not d.find_elements(By.CSS_SELECTOR, '#versions-table tr[data-version-label="v1"]'),
            "v1 gone from the list",
        )
        assert not (world.h0.images_dir / f"{world.name('init')}.v1.qcow2").exists()
        assert page_was_not_reloaded(driver)
        assert severe_console_errors(driver) == []

        # The VM table shows each machine's version too.
        await asyncio.to_thread(driver.get, f"{world.dashboard.url}/vms")
        await until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-image-version]"), "the table")
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-image-version]")]
        assert shown == ["v2", "v2"] and text(driver, "[data-image-target]") == "v2 · 2/2"
    finally:
        await asyncio.to_thread(browser.quit, driver)
