"""What a person does in the client portal with a real browser (Selenium, headless Chromium),
for the portal's end-to-end test and bench/broker.py.

Times are the browser's own clock (``Date.now()``): the click on "Connect" on the
portal page, then, on the console page it leads to, the first SPICE frame (the
display's first surface on the canvas) and the first frame showing the banner guest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.services import guests
from tests.services.browser import console_logs
from tests.waiting import NeverHappened, eventually_blocking

T = TypeVar("T")

# Resolves with [first SPICE frame, first banner frame] (ms, browser clock) once the
# canvas shows the banner: the palette stripe of row 0 in its 16 colours.
WATCH_CANVAS = """
const done = arguments[arguments.length - 1];
const palette = arguments[0], stripeWidth = arguments[1], stripeHeight = arguments[2];
let firstFrame = null;
function close(a, b) { return [0, 1, 2].every((i) => Math.abs(a[i] - b[i]) <= 16); }
function look() {
  const canvas = document.querySelector('#spice-screen canvas');
  if (canvas && canvas.width >= 100) {
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    // spice-html5 makes the canvas for the display's first surface: the first SPICE frame.
    if (firstFrame === null) firstFrame = Date.now();
    const row = ctx.getImageData(0, Math.floor(stripeHeight / 2), canvas.width, 1).data;
    const banner = canvas.width === 720 && palette.every((colour, index) => {
      const x = index * stripeWidth + Math.floor(stripeWidth / 2);
      return close([row[4 * x], row[4 * x + 1], row[4 * x + 2]], colour);
    });
    if (banner) { done([firstFrame, Date.now()]); return; }
  }
  requestAnimationFrame(look);
}
look();
"""


@dataclass(frozen=True)
class ConnectTimes:
    """Milliseconds from the click on "Connect" to the first frame and to the guest's screen."""

    first_frame_ms: float
    banner_ms: float


def wait_until(driver: WebDriver, condition: Callable[[], T], timeout: float = 90) -> T:
    """``condition()``'s first true answer; failing, the page it stayed on and its console."""
    try:
        return eventually_blocking(condition, "the portal's condition", timeout=timeout)
    except NeverHappened as failure:
        logs = "\n".join(str(entry) for entry in console_logs(driver))
        raise AssertionError(f"{failure} at {driver.current_url}; browser console:\n{logs}") from None


def portal_login(driver: WebDriver, base_url: str, username: str, password: str, realm: str = "") -> None:
    driver.get(f"{base_url}/client/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    if realm:
        Select(driver.find_element(By.ID, "realm")).select_by_value(realm)
    driver.find_element(By.ID, "login-submit").click()
    wait_until(driver, lambda: driver.current_url.rstrip("/").endswith("/client"))


def connect(driver: WebDriver, pool_id: int, vm_id: int) -> ConnectTimes:
    """Click the pool's "Connect" and wait until its console shows the banner guest."""
    button = driver.find_element(By.CSS_SELECTOR, f'button[data-action="connect"][data-pool-id="{pool_id}"]')
    clicked = float(driver.execute_script("const t = Date.now(); arguments[0].click(); return t;", button))
    wait_until(driver, lambda: driver.current_url.endswith(f"/client/desktops/{vm_id}/console"))
    driver.set_script_timeout(120)
    first_frame, banner = driver.execute_async_script(
        WATCH_CANVAS, [list(colour) for colour in guests.PALETTE], guests.STRIPE_WIDTH, guests.STRIPE_HEIGHT
    )
    return ConnectTimes(float(first_frame) - clicked, float(banner) - clicked)
