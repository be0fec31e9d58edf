"""The VM page in headless Chromium: from a source VM to running VDI desktops, live, without reloads."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.vms.records import vm_by_name
from tests.services.browser import BrowserFactory
from tests.services.guests import read_boot_counter
from tests.vms.world import VmWorld
from tests.waiting import NeverHappened, eventually

pytestmark = [pytest.mark.kvm, pytest.mark.browser]

# Installed before any page script: records what the VM table shows as it changes.
RECORDER = """
window.__seen = {progress: 0, states: []};
window.__toasts = [];
new MutationObserver(() => {
  document.querySelectorAll('.vm-progress .progress, #operations .progress').forEach((bar) => {
    const value = Number(bar.getAttribute('aria-valuenow') || 0);
    if (value > window.__seen.progress) window.__seen.progress = value;
  });
  document.querySelectorAll('#toasts .toast-body').forEach((t) => {
    if (!window.__toasts.includes(t.textContent)) window.__toasts.push(t.textContent);
  });
  document.querySelectorAll('tr.vm-row').forEach((row) => {
    const badge = row.querySelector('[data-state-badge]');
    const entry = row.dataset.vmName + ':' + (badge ? badge.textContent.trim() : '');
    if (!window.__seen.states.includes(entry)) window.__seen.states.push(entry);
  });
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def describe() -> Any:
    return ""


async def until(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    def look() -> Any:
        try:
            return check()
        except StaleElementReferenceException:  # the row was just replaced by a fresher one
            return None

    try:
        return await eventually(lambda: asyncio.to_thread(look), what, timeout=timeout)
    except NeverHappened as failure:
        raise AssertionError(f"{failure}: {await asyncio.to_thread(describe)}") from None


def press(driver: WebDriver, button_id: str) -> None:
    """Click a button of a long form as a person does: scrolled to the middle of the window first
    (at the window's bottom edge the fixed toast area would take the click), once it stays put."""
    button = driver.find_element(By.ID, button_id)
    last: list[dict[str, float]] = []

    def settled(_: WebDriver) -> bool:
        # Notes the form loads after the page (what the hypervisor can run) may still move it.
        rect = button.rect
        still = bool(last) and last[-1] == rect
        last.append(rect)
        return still

    for attempt in range(3):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        last.clear()
        WebDriverWait(driver, 10, poll_frequency=0.2).until(settled)
        try:
            button.click()
            return
        except ElementClickInterceptedException:
            if attempt == 2:
                raise
            # A toast that arrived meanwhile covers it: close the toasts with their own buttons,
            # as a person would, and click again.
            for close in driver.find_elements(By.CSS_SELECTOR, "#toasts .toast .btn-close"):
                with contextlib.suppress(WebDriverException):
                    close.click()
            WebDriverWait(driver, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#toasts .toast"))


def fill(driver: WebDriver, field: str, value: str) -> None:
    element = driver.find_element(By.ID, field)
    element.clear()
    element.send_keys(value)


def row_action(driver: WebDriver, vm_name: str, action: tuple[str, str]) -> None:
    for _ in range(5):
        try:
            return _row_action(driver, vm_name, action)
        # A live update replaced the row: the old one is gone, or its menu closed before the click.
        except (StaleElementReferenceException, ElementNotInteractableException):
            continue
    raise AssertionError(f"the row of {vm_name} kept changing")


def _row_action(driver: WebDriver, vm_name: str, action: tuple[str, str]) -> None:
    row = driver.find_element(By.CSS_SELECTOR, f'tr.vm-row[data-vm-name="{vm_name}"]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", row)
    row.find_element(By.CSS_SELECTOR, ".dropdown-toggle").click()
    item = row.find_element(By.CSS_SELECTOR, f'[data-action="{action[0]}"]{action[1]}')
    driver.execute_script("arguments[0].scrollIntoView({block: 'nearest'})", item)
    item.click()


async def test_source_to_initial_to_populated_vdi_desktops_in_the_browser(
    vm_world: VmWorld, browser: BrowserFactory
) -> None:
    world = vm_world
    dashboard = world.dashboard
    driver = await asyncio.to_thread(browser.new, width=1400, height=1600)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    source, initial, prefix = world.name("gold"), world.name("init"), world.name("d")

    def log_in() -> None:
        driver.get(dashboard.url + "/login?next=/vms")
        fill(driver, "username", "admin")
        fill(driver, "password", dashboard.admin_password)
        driver.find_element(By.ID, "login-submit").click()

    global describe
    describe = lambda: [  # noqa: E731
        driver.execute_script("return [window.__toasts, window.__seen]"),
        driver.get_log("browser"),
        driver.execute_async_script(
            "fetch('/api/v1/admin/operations').then(r => r.json()).then(arguments[0])"
        ),
    ]
    await asyncio.to_thread(log_in)
    # The login URL (/login?next=/vms) ends with "/vms" too: wait for the page itself.
    await until(lambda: urlsplit(driver.current_url).path == "/vms", "the VM page")

    def new_source() -> None:
        driver.get(dashboard.url + "/vms/new?kind=source")
        fill(driver, "name", source)
        fill(driver, "memory_mib", "64")
        fill(driver, "disk_size_gib", "2")
        press(driver, "create-submit")

    await asyncio.to_thread(new_source)
    await until(
        lambda: driver.find_elements(By.CSS_SELECTOR, f'tr[data-vm-name="{source}"]'), "the source row"
    )
    vm = await vm_by_name(world.db, source)
    assert vm is not None and vm.kind == "source"
    world.install_guest(world.h0, vm.disk_path, "diskwriter-poweroff")
    # Data enough for the copy to take a few seconds, so its progress bar can be watched.
    subprocess.run(["qemu-img", "resize", "-q", vm.disk_path, "2G"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x44 1M 1000M", vm.disk_path],
        check=True,
        capture_output=True,
    )

    def new_initial() -> None:
        driver.get(dashboard.url + f"/vms/new-initial?source_id={vm.id}")
        fill(driver, "name", initial)
        press(driver, "create-submit")

    await asyncio.to_thread(new_initial)
    await until(lambda: driver.execute_script("return window.__seen.progress") >= 100, "the copy at 100 %")
    await until(
        lambda: driver.find_elements(By.CSS_SELECTOR, f'tr[data-vm-name="{initial}"]'), "the initial row"
    )
    await until(lambda: "Published v1" in driver.find_element(By.ID, "toasts").text, "the success toast")

    def new_vdi() -> None:
        driver.get(dashboard.url + "/vms/new-vdi")
        Select(driver.find_element(By.ID, "initial_id")).select_by_visible_text(initial)
        fill(driver, "prefix", prefix)
        fill(driver, "count", "3")
        press(driver, "create-submit")

    await asyncio.to_thread(new_vdi)
    children = [f"{prefix}0{i}" for i in (1, 2, 3)]
    await until(
        lambda: all(driver.find_elements(By.CSS_SELECTOR, f'tr[data-vm-name="{n}"]') for n in children),
        "three VDI rows",
    )
    # The rows appear while the operation still holds the initial: populate only after it ended.
    await until(
        lambda: "Created 3 VDI machines" in driver.find_element(By.ID, "toasts").text, "the VDI toast"
    )
    # From here on the page must never reload: a reload would lose this marker.
    driver.execute_script("window.__sameDocument = 'yes'")

    await asyncio.to_thread(row_action, driver, initial, ("populate", ""))
    await until(lambda: driver.find_element(By.ID, "populate-ok").is_displayed(), "the populate dialog")
    populate_text = driver.find_element(By.ID, "populate-text").text
    assert all(name in populate_text for name in children), "the dialog names what is recreated"
    timeout_field = driver.find_element(By.ID, "populate-timeout")
    assert not timeout_field.is_enabled(), "the timeout only matters when waiting"
    # Wait for the first boots: the diskwriter guests count their boot and power off.
    driver.find_element(By.ID, "populate-wait").click()
    assert timeout_field.is_enabled()
    driver.find_element(By.ID, "populate-ok").click()
    initial_vm = await vm_by_name(world.db, initial)
    assert initial_vm is not None
    finished = await until(
        lambda: "Populated 3 of 3" in driver.execute_script("return window.__toasts.join('|')"),
        "populate to finish",
        120,
    )
    assert finished
    assert "first boots finished" in driver.execute_script("return window.__toasts.join('|')")
    for name in children:
        child = await vm_by_name(world.db, name)
        assert child is not None and read_boot_counter(Path(child.disk_path)) == 1

    await until(
        lambda: not driver.find_element(By.ID, "populate-modal").is_displayed(), "the dialog to close"
    )
    start_item = f'tr[data-vm-name="{children[0]}"] [data-power="start"]'
    await until(lambda: driver.find_elements(By.CSS_SELECTOR, start_item), "the start action")
    await asyncio.to_thread(row_action, driver, children[0], ("power", '[data-power="start"]'))
    # The diskwriter guest boots, counts, and powers itself off: the table shows both changes.
    await until(
        lambda: f"{children[0]}:running" in driver.execute_script("return window.__seen.states"),
        "the running badge",
    )
    await until(
        lambda: (
            driver.find_element(By.CSS_SELECTOR, f'tr[data-vm-name="{children[0]}"] [data-state-badge]').text
            == "shut off"
        ),
        "the shut off badge",
    )
    assert driver.execute_script("return window.__sameDocument") == "yes", "no reload happened"
    errors = [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and "favicon.ico" not in entry["message"]
        # Chromium's abort when the host's interfaces change (the other pass making namespaces).
        and "net::ERR_NETWORK_CHANGED" not in entry["message"]
    ]
    assert not errors, errors
    driver.quit()
