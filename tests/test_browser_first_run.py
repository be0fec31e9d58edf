"""A first run, end to end, in headless Chromium against ``kvm-vdi serve`` started as a subprocess.

Fresh SQLite database and data dir; the admin logs in with the password the
dashboard printed, is made to choose a new one, authorizes the dashboard's key
on the loopback hypervisor, adds it, confirms its host key, and watches its
state turn "up" in the list without the page being reloaded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import Select

from tests.browser_steps import (
    By,
    fill,
    log_in,
    mark_page,
    page_was_not_reloaded,
    severe_console_errors,
    wait,
    wait_live,
)
from tests.served import ServedDashboard
from tests.services.browser import BrowserFactory
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir

pytestmark = [pytest.mark.browser, pytest.mark.kvm]

NEW_PASSWORD = "first-run-admin-pw-1"


def _host_fingerprint(host: LibvirtHost) -> str:
    assert host.sshd is not None
    pub = host.sshd.host_key_path.with_name(host.sshd.host_key_path.name + ".pub")
    return subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
    ).stdout.split()[1]


def test_first_run_from_log_in_to_a_hypervisor_that_is_up(
    run_dir: RunDir, tmp_path: Path, browser: BrowserFactory, hypervisor_host: LibvirtHost
) -> None:
    with ServedDashboard(run_dir, tmp_path / "served", f"sqlite:///{tmp_path / 'fresh.sqlite3'}") as served:
        password = served.first_admin_password()
        with browser.session() as driver:
            log_in(driver, served.url, "admin", password)
            assert driver.current_url == f"{served.url}/account/password", "the generated password must go"
            assert "choose your own now" in driver.find_element(By.ID, "must-change").text
            fill(driver, "current_password", password)
            fill(driver, "new_password", NEW_PASSWORD)
            fill(driver, "repeat_password", NEW_PASSWORD)
            driver.find_element(By.ID, "password-submit").click()
            wait(driver).until(lambda d: d.current_url == f"{served.url}/")
            wait(driver).until(lambda d: "Password changed." in d.find_element(By.ID, "toasts").text)

            # The empty hypervisor list explains what to do and shows the dashboard's key.
            driver.find_element(By.LINK_TEXT, "Hypervisors").click()
            wait(driver).until(lambda d: d.find_element(By.ID, "hypervisor-empty").is_displayed())
            public_key = str(
                driver.find_element(By.ID, "dashboard-public-key").get_attribute("textContent")
            ).strip()
            assert public_key.startswith("ssh-ed25519 ")
            hypervisor_host.authorize(public_key)

            driver.find_element(By.ID, "add-hypervisor").click()
            wait(driver).until(lambda d: d.current_url == f"{served.url}/hypervisors/new")
            fill(driver, "f-name", "loop")
            Select(driver.find_element(By.ID, "f-transport")).select_by_value("ssh")
            fill(driver, "f-address", hypervisor_host.ssh_address)
            fill(driver, "f-ssh_port", str(hypervisor_host.ssh_port))
            fill(driver, "f-ssh_user", hypervisor_host.ssh_user)
            fill(driver, "f-images_dir", str(hypervisor_host.images_dir))
            fill(driver, "f-volatile_dir", str(hypervisor_host.volatile_dir))
            driver.find_element(By.ID, "f-name").submit()

            # First contact: the fingerprint, to compare with the one on the hypervisor.
            wait(driver).until(lambda d: "/host-key" in d.current_url)
            shown = driver.find_element(By.ID, "presented-fingerprint").text
            assert shown == _host_fingerprint(hypervisor_host)
            driver.find_element(By.ID, "fingerprint-verified").click()
            driver.find_element(By.ID, "host-key-confirm").click()

            wait(driver).until(lambda d: d.current_url.split("?")[0] == f"{served.url}/hypervisors")
            wait_live(driver)
            mark_page(driver)
            row = driver.find_element(By.CSS_SELECTOR, "tr[data-hypervisor-id]")
            wait(driver, 60).until(
                lambda d: row.find_element(By.CSS_SELECTOR, '[data-field="state"]').text == "Up"
            )
            wait(driver).until(
                lambda d: (
                    row.find_element(By.CSS_SELECTOR, '[data-field="libvirt_version"]').text
                    == hypervisor_host.libvirt_version
                )
            )
            assert page_was_not_reloaded(driver), "the state changed in place"
            assert severe_console_errors(driver) == []
