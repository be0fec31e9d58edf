"""Straight to the desktop in the portal, in headless Chromium: a user whose only pool says so
logs in and lands in the HTML5 console of their desktop (the banner guest, on KVM) without
clicking a pool; the console's way back shows the pool tiles and stays there."""

from __future__ import annotations

import asyncio

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.broker.desktop_lab import LAB_SETTINGS, DesktopLab, iso_dirs_kept
from tests.broker.portal_steps import wait_until
from tests.broker.records import CLIENT_PASSWORD, add_client
from tests.proxy.test_console_kvm import status
from tests.services.browser import BrowserFactory
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import WorldFactory

pytestmark = pytest.mark.kvm


async def test_a_user_with_one_pool_lands_in_the_console_of_their_desktop_after_log_in(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, browser: BrowserFactory
) -> None:
    with iso_dirs_kept([hypervisor_host]):
        lab = DesktopLab(await world_factory([hypervisor_host], **LAB_SETTINGS))
        try:
            vm = await lab.desktop_vm("straight")
            user_id = await add_client(lab.db, "sam")
            await lab.pool("Straight desktops", [vm], [user_id], straight_to_desktop=True)
            driver = await asyncio.to_thread(browser.new, width=1024, height=700)
            try:
                await asyncio.to_thread(straight_in, driver, lab.world.dashboard.url, vm.id)
            finally:
                await asyncio.to_thread(browser.quit, driver)
            assert (await lab.vm(vm.id)).assigned_user_id == user_id
        finally:
            await lab.aclose()


def straight_in(driver: WebDriver, base_url: str, vm_id: int) -> None:
    driver.get(f"{base_url}/client/login")
    driver.find_element(By.ID, "username").send_keys("sam")
    driver.find_element(By.ID, "password").send_keys(CLIENT_PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    # No pool is clicked: the desktop starts and its console opens.
    wait_until(driver, lambda: driver.current_url.endswith(f"/client/desktops/{vm_id}/console"))
    wait_until(driver, lambda: status(driver)[0] == "connected")
    # The page before the console is the pool tiles (not the log-in redirect that went straight).
    driver.back()
    wait_until(driver, lambda: driver.current_url == f"{base_url}/client")
    wait_until(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#pool-tiles .pool-tile"))
    assert driver.find_elements(By.ID, "straight") == []
    # The console's own way back leads to the tiles as well.
    driver.forward()
    wait_until(driver, lambda: driver.current_url.endswith(f"/client/desktops/{vm_id}/console"))
    driver.find_element(By.CSS_SELECTOR, 'a[title="Back to the dashboard"]').click()
    wait_until(driver, lambda: driver.current_url == f"{base_url}/client")
    assert driver.find_elements(By.ID, "straight") == []
