"""The client portal end to end in headless Chromium: a directory user of the harness's slapd
logs in, clicks a pool, and the HTML5 console shows their desktop (the banner guest, on KVM)."""

from __future__ import annotations

import asyncio

import pytest
from selenium.webdriver.common.by import By

from app.db.schema import directory_groups, pool_groups, users
from tests.broker.desktop_lab import LAB_SETTINGS, DesktopLab, iso_dirs_kept
from tests.broker.portal_steps import connect, portal_login, wait_until
from tests.proxy.test_console_kvm import canvas_screen, shows_banner, status
from tests.services import guests
from tests.services.browser import BrowserFactory
from tests.services.libvirt_host import LibvirtHost
from tests.services.slapd import Slapd
from tests.vms.world import WorldFactory

pytestmark = pytest.mark.kvm


async def test_a_directory_user_logs_in_clicks_a_pool_and_the_console_shows_the_desktop(
    world_factory: WorldFactory, hypervisor_host: LibvirtHost, slapd: Slapd, browser: BrowserFactory
) -> None:
    directory = {
        "kind": "ldap",
        "url": slapd.url,
        "allow_cleartext": True,  # the suite's slapd, in the test network
        "base_dn": slapd.base_dn,
        "user_dn_template": f"uid={{username}},{slapd.classic.users_dn}",
    }
    with iso_dirs_kept([hypervisor_host]):
        lab = DesktopLab(await world_factory([hypervisor_host], directory=directory, **LAB_SETTINGS))
        await portal_shows_the_desktop(lab, slapd, browser)


async def portal_shows_the_desktop(lab: DesktopLab, slapd: Slapd, browser: BrowserFactory) -> None:
    try:
        vm = await lab.desktop_vm("portal")
        pool_id = await lab.pool("Lab desktops", [vm], [])
        group_id = await lab.db.execute(directory_groups.insert().values(name="vdi-users"))
        await lab.db.execute(pool_groups.insert().values(pool_id=pool_id, group_id=group_id))
        bob = slapd.users["bob"]

        driver = await asyncio.to_thread(browser.new, width=1024, height=700)
        try:
            await asyncio.to_thread(
                portal_login, driver, lab.world.dashboard.url, "bob", bob.password, "directory"
            )
            # The desktop is off: the portal says it is starting, then opens its console.
            times = await asyncio.to_thread(connect, driver, pool_id, vm.id)
            assert times.banner_ms >= times.first_frame_ms > 0
            await asyncio.to_thread(wait_until, driver, lambda: status(driver)[0] == "connected")
            # The whole canvas is the guest's screen: blue, with the palette stripe.
            screen = await asyncio.to_thread(
                wait_until, driver, lambda: (s := canvas_screen(driver)) is not None and shows_banner(s) and s
            )
            assert isinstance(screen, guests.Screen) and screen.fraction(guests.BLUE) > 0.6
            root = driver.find_element(By.ID, "console")
            assert root.get_attribute("data-heartbeat-url") == f"/client/desktops/{vm.id}/heartbeat"
        finally:
            await asyncio.to_thread(browser.quit, driver)

        row = await lab.db.fetch_one(users.select().where(users.c.username == "bob"))
        assert row is not None and row.source == "directory"
        assert (await lab.vm(vm.id)).assigned_user_id == row.id
        opened = await lab.services.audit.recent(action="console.open")
        assert opened and opened[0]["actor"] == "bob"
    finally:
        await lab.aclose()
