"""Steps a person takes in the dashboard with a real browser (Selenium, headless Chromium)."""

from __future__ import annotations

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 30


def wait(driver: WebDriver, timeout: float = WAIT) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, timeout)


def fill(driver: WebDriver, field_id: str, value: str) -> None:
    element = driver.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


def log_in(driver: WebDriver, base_url: str, username: str, password: str) -> None:
    driver.get(f"{base_url}/login")
    fill(driver, "username", username)
    fill(driver, "password", password)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(lambda d: "/login" not in d.current_url)


def mark_page(driver: WebDriver) -> None:
    """Put a marker on ``window``: it survives in-place updates, a reload would drop it."""
    driver.execute_script("window.__notReloaded = true;")


def page_was_not_reloaded(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.__notReloaded === true;"))


def live_state(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "live-indicator").get_attribute("data-state"))


def wait_live(driver: WebDriver, state: str = "connected", timeout: float = WAIT) -> None:
    wait(driver, timeout).until(lambda d: live_state(d) == state)


def row_state(driver: WebDriver, hypervisor_id: int) -> tuple[str, str]:
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-hypervisor-id="{hypervisor_id}"]')
    badge = row.find_element(By.CSS_SELECTOR, '[data-field="state"]').text
    reason = row.find_element(By.CSS_SELECTOR, '[data-field="reason"]').text
    return badge, reason


def toasts(driver: WebDriver) -> list[str]:
    return [
        str(t.get_attribute("textContent")).strip()
        for t in driver.find_elements(By.CSS_SELECTOR, "#toasts .toast")
    ]


def severe_console_errors(driver: WebDriver) -> list[str]:
    """Browser console errors (script failures, refused by the security policy ...).

    Left out: ERR_NETWORK_CHANGED, Chromium's own abort when the host's network interfaces change,
    which the suite's other pass does as it creates its hypervisors' network namespaces."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "net::ERR_NETWORK_CHANGED" not in e["message"]
    ]


__all__ = ["By", "ec"]
