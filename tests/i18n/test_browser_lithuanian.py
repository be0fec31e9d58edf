"""Lithuanian in headless Chromium: the portal, the admin VM page and the HTML5 console render in
it, the scripts speak it too, and the language switch takes effect at once (screenshots are
kept as test artefacts)."""

from __future__ import annotations

import asyncio

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from app.i18n import gettext, use_language
from app.i18n.labels import VM_STATES
from tests.broker.records import CLIENT_PASSWORD, add_client, add_connected_hypervisor, add_pool, add_vm
from tests.browser_steps import By, fill, severe_console_errors, wait
from tests.dashboard import RunningDashboard
from tests.i18n.artefacts import artefact
from tests.services.browser import BrowserFactory

pytestmark = pytest.mark.browser

# What the console page may say when the desktop's display cannot be opened (a test-driver VM).
CONSOLE_TITLES = (
    "Desktop stopped",
    "Console not available",
    "Desktop unavailable",
    "Connection lost",
    "Desktop unreachable",
)


def lithuanian(message: str) -> str:
    with use_language("lt"):
        return gettext(message)


def text_of(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text).strip()


def page_language(driver: WebDriver) -> str:
    # Read by script: an element found on the page being left would go stale mid-navigation.
    return str(driver.execute_script("return document.documentElement.lang"))


def switch_to(driver: WebDriver, language: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#language-switch button[data-language="{language}"]').click()
    wait(driver).until(lambda d: page_language(d) == language)


def screenshot(driver: WebDriver, name: str) -> None:
    path = artefact(f"i18n/{name}.png")
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 0


def portal_and_admin_pages(driver: WebDriver, url: str, admin_password: str, vm_id: int) -> None:
    # The browser asks for English; the switch on the portal's log-in page turns it Lithuanian at once.
    driver.get(f"{url}/client/login")
    assert text_of(driver, "main h1") == "Log in to your desktop"
    switch_to(driver, "lt")
    assert driver.current_url.endswith("/client/login")
    assert text_of(driver, "main h1") == "Prisijunkite prie savo darbalaukio"
    assert text_of(driver, "#login-submit") == "Prisijungti"
    screenshot(driver, "portal-login-lt")

    fill(driver, "username", "ona")
    fill(driver, "password", CLIENT_PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(lambda d: d.current_url.rstrip("/").split("?")[0].endswith("/client"))
    assert text_of(driver, "main h1") == "Mano darbalaukiai"
    tile = text_of(driver, ".pool-tile")
    assert "laisva 1 iš 1" in tile and "Prisijungti" in tile
    screenshot(driver, "portal-lt")

    # The administrator's pages keep the language chosen in this browser.
    driver.get(f"{url}/login")
    assert text_of(driver, "main h1") == "KVM-VDI administravimas"
    fill(driver, "username", "admin")
    fill(driver, "password", admin_password)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(lambda d: "/login" not in d.current_url)
    driver.get(f"{url}/vms")
    assert text_of(driver, "main h1") == "Virtualiosios mašinos"
    headers = [th.text.strip() for th in driver.find_elements(By.CSS_SELECTOR, "#vm-table-wrap thead th")]
    assert {"Pavadinimas", "Būsena", "Hipervizorius", "Žymės", "Dabartinis naudotojas"} <= set(headers)
    badge = driver.find_element(By.CSS_SELECTOR, f'tr[data-vm-id="{vm_id}"] [data-state-badge]')
    # The row's state (a test-driver VM the hypervisor does not define: "not defined").
    assert badge.text.strip() in {lithuanian(label) for label in VM_STATES.values()} - set(VM_STATES.values())
    # The live badge is written by a script, from the scripts' Lithuanian catalogue.
    wait(driver).until(lambda d: text_of(d, "#live-indicator .live-text") == "Tiesiogiai")
    screenshot(driver, "vms-lt")

    # The HTML5 console: the page and what its script says when the display cannot be opened.
    driver.get(f"{url}/vms/{vm_id}/console")
    assert driver.find_element(By.ID, "send-cad").get_attribute("title") == "Siųsti Ctrl+Alt+Del"
    expected = {lithuanian(title) for title in CONSOLE_TITLES}
    wait(driver).until(lambda d: d.find_element(By.ID, "overlay-title").text.strip() in expected)
    assert text_of(driver, "#overlay-reconnect") in {"Prisijungti iš naujo", "Prisijungti dabar"}
    screenshot(driver, "console-lt")

    # Back to English from the user menu: the next page is English, and the account keeps it.
    driver.get(f"{url}/vms")
    driver.find_element(By.ID, "user-menu").click()
    driver.find_element(By.CSS_SELECTOR, '.dropdown-menu button[data-language="en"]').click()
    wait(driver).until(lambda d: page_language(d) == "en")
    assert driver.current_url.endswith("/vms")
    assert text_of(driver, "main h1") == "Virtual machines"
    # Only the console's refused opening (409: the VM is not running) may be in the browser's log.
    assert [e for e in severe_console_errors(driver) if "status of 409" not in e] == []


async def test_portal_vm_page_and_console_in_lithuanian_and_the_switch_takes_effect_at_once(
    dashboard: RunningDashboard, browser: BrowserFactory
) -> None:
    services = dashboard.services
    hv_id = await add_connected_hypervisor(services.hypervisors, services.db, "lt-hv")
    vm_id = await add_vm(services.db, "lt-desktop", hv_id, kind="simple", state="shutoff")
    client_id = await add_client(services.db, "ona")
    await add_pool(services.db, "Mokykla", [vm_id], [client_id], reset_on_handout=False)
    driver = await asyncio.to_thread(browser.new, width=1280, height=900)
    try:
        await asyncio.to_thread(
            portal_and_admin_pages, driver, dashboard.url, dashboard.admin_password, vm_id
        )
    finally:
        await asyncio.to_thread(browser.quit, driver)
