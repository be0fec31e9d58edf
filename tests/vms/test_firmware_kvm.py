"""UEFI, Secure Boot and TPM desktops on the real hypervisor h0, made through the dashboard.

Where KVM cannot run UEFI firmware (nested KVM without System Management Mode),
the dashboard places such desktops on emulation (TCG) and says why; the test
finds out independently (a direct start with libvirt) and expects exactly that.
Secure Boot is proven with Debian's test keys: a tiny EFI program signed with
the test key runs (its yellow-on-blue screen is seen through the HTML5 console
in Chromium), the unsigned one is refused by the firmware.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt
import pytest

from app.vms.records import Vm, get_vm, vm_by_name
from tests.broker.portal_steps import wait_until
from tests.proxy.test_console_kvm import canvas_screen, login, status
from tests.services import efi, guests
from tests.services.browser import BrowserFactory
from tests.services.libvirt_host import LibvirtHost
from tests.vms.test_browser_e2e import press
from tests.vms.world import VmWorld
from tests.waiting import eventually

pytestmark = pytest.mark.kvm
GENEROUS = 120
T = TypeVar("T")


def starts_paused(host: LibvirtHost, xml: str) -> tuple[bool, str]:
    """Independently of the dashboard: does this domain start (paused) here? (and libvirt's error)"""
    conn = libvirt.open(host.local_uri)
    try:
        domain = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as exc:
        return False, str(exc)
    else:
        domain.destroy()
        return True, ""
    finally:
        conn.close()


def kvm_runs_secure_boot_firmware(host: LibvirtHost) -> tuple[bool, str]:
    """Does a KVM domain with System Management Mode (Secure Boot's need) start here?"""
    return starts_paused(
        host,
        """<domain type='kvm'><name>fwcheck-smm</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/><smm state='on'/></features>
      <devices><memballoon model='none'/></devices></domain>""",
    )


def install_raw(world: VmWorld, disk: str, raw: Path) -> None:
    """Replace the VM's (empty) qcow2 disk with a qcow2 copy of ``raw``."""
    target = Path(disk)
    temp = target.with_name(target.name + ".install")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(temp)], check=True)
    shutil.chown(temp, world.h0.host.ssh_user, "libvirt")
    temp.chmod(0o664)
    temp.replace(target)


def enrol_test_keys(world: VmWorld, vm: Vm) -> None:
    """What an admin does in the firmware's setup: enrol their own keys (here Debian's test keys)."""
    nvram = world.h0.images_dir / f"{vm.name}.VARS.fd"
    assert nvram.exists(), "the dashboard made the VM its own variable store"
    shutil.copyfile(efi.SNAKEOIL_VARS, nvram)
    shutil.chown(nvram, world.h0.host.ssh_user, world.h0.host.ssh_user)


async def create_uefi_desktop(world: VmWorld, suffix: str, *, tpm: bool, signed: bool, tmp: Path) -> Vm:
    admin = await world.admin()
    response = await admin.post(
        "/api/v1/admin/vms",
        json={
            "name": world.name(suffix),
            "hypervisor_id": world.h0.id,
            "memory_mib": 256,
            "disk_size_gib": 1,
            "machine": "q35",
            "firmware": "uefi",
            "secure_boot": True,
            "tpm": tpm,
            "disk_bus": "sata",
        },
    )
    assert response.status_code == 201, response.text
    vm = await get_vm(world.db, response.json()["vms"][0]["id"])
    assert vm is not None
    install_raw(world, vm.disk_path, efi.build_esp(tmp, signed=signed))
    enrol_test_keys(world, vm)
    return vm


def screen_of(host: LibvirtHost, name: str) -> guests.Screen:
    conn = libvirt.open(host.local_uri)
    try:
        return guests.screenshot(conn.lookupByName(name))
    finally:
        conn.close()


async def until(check: Callable[[], T | None], what: str, timeout: float = GENEROUS) -> T:
    """:func:`eventually` for a check that blocks (a screenshot over libvirt): run on a thread."""
    return await eventually(lambda: asyncio.to_thread(check), what, timeout=timeout, interval=0.3)


def text_lines(screen: guests.Screen) -> int:
    """How many of the first 12 text rows (16 pixels each) show light text: the firmware's log lines."""
    rows = 0
    for row in range(12):
        y0 = row * 16
        lit = sum(
            1
            for y in range(y0 + 2, min(y0 + 14, screen.height), 2)
            for x in range(0, min(640, screen.width), 2)
            if sum(screen.pixel(x, y)) > 450
        )
        if lit > 20:
            rows += 1
    return rows


def swtpm_serving(socket: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-x", "swtpm"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if f"path={socket}," in line]


async def test_a_uefi_secure_boot_tpm_desktop_runs_where_it_can_and_its_signed_program_shows_in_the_console(
    vm_world: VmWorld, browser: BrowserFactory, tmp_path: Path
) -> None:
    host = vm_world.h0.host
    vm = await create_uefi_desktop(vm_world, "sb", tpm=True, signed=True, tmp=tmp_path)
    kvm_works, why = await asyncio.to_thread(kvm_runs_secure_boot_firmware, host)
    expected = "kvm" if kvm_works and host.virt_type == "kvm" else "qemu"
    assert vm.domain_type == expected, (vm.domain_type, why)
    defined = ET.fromstring(host.virsh("dumpxml", "--inactive", vm.name))  # noqa: S314
    assert defined.get("type") == expected
    assert defined.find("os/loader").get("secure") == "yes"  # type: ignore[union-attr]
    assert defined.findtext("os/nvram") == str(vm_world.h0.images_dir / f"{vm.name}.VARS.fd")

    await vm_world.service.power(vm.id, "start")
    await vm_world.wait_state(vm.id, "running")
    # The TPM 2.0 device and the swtpm process behind it.
    live = ET.fromstring(host.virsh("dumpxml", vm.name))  # noqa: S314
    tpm = live.find("devices/tpm")
    assert tpm is not None and tpm.get("model") == "tpm-crb"
    socket = vm_world.h0.volatile_dir / f"{vm.name}.swtpm.sock"
    assert tpm.find("backend/source").get("path") == str(socket)  # type: ignore[union-attr]
    assert len(swtpm_serving(socket)) == 1
    assert (vm_world.h0.images_dir / f"{vm.name}.tpm" / "tpm2-00.permall").exists()

    # The signed program ran under Secure Boot: its screen, as the hypervisor shows it ...
    await until(
        lambda: screen_of(host, vm.name).fraction(efi.EFI_BLUE) > 0.8, "the signed EFI program's screen"
    )
    # ... and through the HTML5 console in Chromium.
    driver = await asyncio.to_thread(browser.new, width=1024, height=700)
    try:
        await asyncio.to_thread(login, driver, vm_world.dashboard)
        await asyncio.to_thread(driver.get, vm_world.dashboard.url + f"/vms/{vm.id}/console")
        await asyncio.to_thread(wait_until, driver, lambda: status(driver)[0] == "connected")
        screen = await asyncio.to_thread(
            wait_until, driver, lambda: (s := canvas_screen(driver)) and s.fraction(efi.EFI_BLUE) > 0.8 and s
        )
        assert isinstance(screen, guests.Screen) and screen.fraction(efi.EFI_BLUE) > 0.8
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(driver.quit)

    await vm_world.service.power(vm.id, "poweroff")
    await vm_world.wait_state(vm.id, "shutoff")
    await until(lambda: not swtpm_serving(socket), "the swtpm ending with its VM", 30)


async def test_the_firmware_refuses_an_unsigned_program_under_secure_boot(
    vm_world: VmWorld, tmp_path: Path
) -> None:
    host = vm_world.h0.host
    vm = await create_uefi_desktop(vm_world, "unsigned", tpm=False, signed=False, tmp=tmp_path)
    await vm_world.service.power(vm.id, "start")

    # The firmware tries the disk, is denied, tries its shell (not signed with the test key either),
    # and ends listing its failures: five lines and more of boot log on a black screen.
    def refused() -> guests.Screen | None:
        screen = screen_of(host, vm.name)
        return screen if text_lines(screen) >= 5 else None

    screen = await until(refused, "the firmware's refusal")
    assert screen.fraction(efi.EFI_BLUE) < 0.05, "the unsigned program never painted its screen"
    await vm_world.service.power(vm.id, "poweroff")


def starts_directly(host: LibvirtHost, domain_type: str, cpu_mode: str) -> tuple[bool, str]:
    """Does a domain with this CPU mode start (paused) here?"""
    return starts_paused(
        host,
        f"""<domain type='{domain_type}'><name>fwcheck-cpu</name><memory unit='MiB'>64</memory>
      <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><cpu mode='{cpu_mode}'/>
      <devices><memballoon model='none'/></devices></domain>""",
    )


async def test_the_offered_cpu_modes_and_firmware_are_what_really_starts_and_the_rest_is_refused(
    vm_world: VmWorld,
) -> None:
    host = vm_world.h0.host
    admin = await vm_world.admin()
    response = await admin.get(f"/api/v1/admin/hypervisors/{vm_world.h0.id}/capabilities")
    assert response.status_code == 200, response.text
    offered = response.json()
    options = offered["options"]
    if host.virt_type == "kvm":
        for mode in ("host-model", "host-passthrough"):
            works, error = await asyncio.to_thread(starts_directly, host, "kvm", mode)
            assert options[mode]["kvm"]["ok"] is works, (mode, options[mode]["kvm"], error)
            if not works:
                # The admin reads QEMU's own complaint (this machine: "failed to set MSR 0x10a").
                last = [line for line in error.splitlines() if line.strip()][-1]
                reason = options[mode]["kvm"]["reason"]
                assert any(word in reason for word in last.split() if len(word) > 6), (reason, error)
        smm, _error = await asyncio.to_thread(kvm_runs_secure_boot_firmware, host)
        assert options["secure_boot"]["kvm"]["ok"] is smm
    # TCG never passes the host CPU through (libvirt says so), and always runs UEFI and a TPM here.
    assert options["host-passthrough"]["qemu"] == {
        "ok": False,
        "reason": "libvirt does not offer the host-passthrough CPU mode",
    }
    for option in ("uefi", "secure_boot", "tpm"):
        assert options[option]["qemu"]["ok"], options[option]

    # What runs nowhere is refused at creation, naming every reason; nothing is made.
    mode = "host-passthrough"
    if not any(answer["ok"] for answer in options[mode].values()):
        refused = await admin.post(
            "/api/v1/admin/vms",
            json={
                "name": vm_world.name("nested"),
                "hypervisor_id": vm_world.h0.id,
                "cpu_mode": "host-passthrough",
            },
        )
        assert refused.status_code == 400, refused.text
        message = refused.json()["fields"]["cpu_mode"]
        assert "KVM:" in message and "emulation (TCG):" in message
        assert not (vm_world.h0.images_dir / f"{vm_world.name('nested')}.qcow2").exists()
        assert vm_world.name("nested") not in host.domain_names()

    # kvm-vdi check says the same in one line.
    from app.checks import desktops_line

    line = desktops_line("h0", offered)
    assert "UEFI yes" in line.detail and "Secure Boot yes" in line.detail and "TPM 2.0 yes" in line.detail
    assert line.result == "ok"


async def test_a_windows_11_machine_is_made_from_the_form_which_says_where_it_runs(
    vm_world: VmWorld, browser: BrowserFactory
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    name = vm_world.name("win11")
    driver = await asyncio.to_thread(browser.new, width=1200, height=1400)
    try:
        await asyncio.to_thread(login, driver, vm_world.dashboard)

        def fill_form() -> str:
            driver.get(vm_world.dashboard.url + f"/vms/new?hypervisor_id={vm_world.h0.id}")
            note = driver.find_element(By.ID, "machine-note")
            wait_until(driver, lambda: note.text.startswith("Runs with"), timeout=120)
            driver.find_element(By.ID, "name").send_keys(name)
            for field, value in (("memory_mib", "256"), ("disk_size_gib", "1")):
                element = driver.find_element(By.ID, field)
                element.clear()
                element.send_keys(value)
            Select(driver.find_element(By.ID, "os_type")).select_by_value("windows")
            Select(driver.find_element(By.ID, "machine")).select_by_value("q35")
            Select(driver.find_element(By.ID, "firmware")).select_by_value("uefi")
            # Keyboard only for the check boxes.
            for box in ("secure_boot", "tpm"):
                driver.find_element(By.ID, box).send_keys(Keys.SPACE)
            wait_until(driver, lambda: "Runs with" in note.text or "cannot" in note.text)
            text = note.text
            press(driver, "create-submit")
            wait_until(driver, lambda: "/vms/new" not in driver.current_url)
            return text

        said = await asyncio.to_thread(fill_form)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(driver.quit)
    vm = await vm_by_name(vm_world.db, name)
    assert vm is not None
    assert (vm.machine, vm.firmware, vm.secure_boot, vm.tpm, vm.os_type) == (
        "q35",
        "uefi",
        True,
        True,
        "windows",
    )
    # The form said what the dashboard then did.
    assert said == ("Runs with KVM." if vm.domain_type == "kvm" else said)
    if vm.domain_type == "qemu":
        assert said.startswith("Runs with emulation (TCG) here (slower).") and "KVM:" in said
