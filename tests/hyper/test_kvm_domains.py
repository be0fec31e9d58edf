"""A real KVM desktop on the test hypervisor h0, driven over pinned-key qemu+ssh: overlay,
definition, start, screenshot, SPICE endpoint and one-time password (checked with a real
SPICE log-in), reset, force-off and removal, with lifecycle events along the way."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta

from app.hyper import Hypervisor
from tests.hyper.conftest import RegistryFactory, RegistryHarness, ssh_record
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.spice_link import LINK_OK, LINK_PERMISSION_DENIED, spice_login
from tests.waiting import eventually


async def wait_for_blue_screen(hv: Hypervisor, name: str, timeout: float = 60) -> guests.Screen:
    async def blue() -> guests.Screen | None:
        screen = guests.decode_image(await hv.screenshot_png(name, max_width=360))
        return screen if screen.fraction(guests.BLUE) > 0.5 else None

    return await eventually(blue, f"{name}'s blue screen", timeout=timeout)


async def login(host: str, port: int, password: str) -> int:
    return await asyncio.to_thread(spice_login, host, port, password)


async def new_desktop(
    harness: RegistryHarness, h0: LibvirtHost, guest_images: GuestImages, name: str, virt_type: str
) -> Hypervisor:
    hv = harness.registry.get(1)
    base = h0.images_dir / f"{name}-base.qcow2"
    shutil.copyfile(guest_images.base("banner"), base)
    base.chmod(0o644)
    disk = h0.images_dir / f"{name}.qcow2"
    await hv.create_overlay(str(base), str(disk))
    xml = guests.domain_xml(
        name, disk, virt_type=virt_type, spice_listen=h0.spice_listen, spice_password="initial-secret"
    )
    await hv.define(xml)
    return hv


async def test_a_banner_desktop_runs_shows_its_screen_and_is_removed(
    registry_factory: RegistryFactory, h0: LibvirtHost, guest_images: GuestImages
) -> None:
    harness = await registry_factory([ssh_record(h0)])
    hv = await new_desktop(harness, h0, guest_images, "kvm-banner", h0.virt_type)

    assert await hv.start("kvm-banner") is True
    started = await harness.wait_for_domain_event("kvm-banner", "started")
    assert (started.state, started.reason) == ("running", "booted")
    screen = await wait_for_blue_screen(hv, "kvm-banner")
    assert (screen.width, screen.height) == (360, 200), "720x400 text screen scaled to 360 wide"

    await hv.reset("kvm-banner")
    rebooted = await harness.wait_for_domain_event("kvm-banner", "rebooted")
    assert rebooted.state == "running"

    assert await hv.destroy("kvm-banner") is True
    stopped = await harness.wait_for_domain_event("kvm-banner", "stopped")
    assert (stopped.state, stopped.reason) == ("shutoff", "destroyed")
    await hv.undefine("kvm-banner")
    removed = await harness.wait_for_domain_event("kvm-banner", "undefined")
    assert removed.state == "undefined"
    assert "kvm-banner" not in h0.domain_names()
    await hv.remove_file(str(h0.images_dir / "kvm-banner.qcow2"))
    await hv.remove_file(str(h0.images_dir / "kvm-banner-base.qcow2"))


async def test_a_new_spice_password_is_accepted_and_the_old_one_refused(
    registry_factory: RegistryFactory, h0: LibvirtHost, guest_images: GuestImages
) -> None:
    # The harness guest offers a plain port only: allowed on this record, for a plain log-in.
    harness = await registry_factory([ssh_record(h0, spice_plain=True)])
    hv = await new_desktop(harness, h0, guest_images, "kvm-spice", guests.FAST_VIRT_TYPE)
    await hv.start("kvm-spice")
    try:
        host, port, _ = await hv.spice_endpoint("kvm-spice")
        assert port is not None
        assert host == h0.spice_listen
        assert h0.spice_port_range is not None
        assert h0.spice_port_range[0] <= port <= h0.spice_port_range[1]
        assert await login(host, port, "initial-secret") == LINK_OK

        await hv.set_spice_password("kvm-spice", "fresh-secret", datetime.now(UTC) + timedelta(minutes=2))
        assert await login(host, port, "fresh-secret") == LINK_OK
        assert await login(host, port, "initial-secret") == LINK_PERMISSION_DENIED
        assert await login(host, port, "") == LINK_PERMISSION_DENIED

        # The password is set on the running domain only: never in its definition on disk.
        assert "fresh-secret" not in await hv.domain_xml("kvm-spice", secure=True, inactive=True)
        live_public = await hv.domain_xml("kvm-spice")
        assert "fresh-secret" not in live_public and f"port='{port}'" in live_public

        # A naive UTC datetime works too; a validity in the past locks everybody out.
        expired = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
        await hv.set_spice_password("kvm-spice", "late-secret", expired)
        assert await login(host, port, "late-secret") == LINK_PERMISSION_DENIED
        assert (await hv.spice_endpoint("kvm-spice"))[:2] == (host, port), "the display kept its port"
    finally:
        await hv.destroy("kvm-spice")
        await hv.undefine("kvm-spice")
        await hv.remove_file(str(h0.images_dir / "kvm-spice.qcow2"))
        await hv.remove_file(str(h0.images_dir / "kvm-spice-base.qcow2"))
