"""Firmware benchmark: what UEFI + Secure Boot + TPM 2.0 costs a desktop at start, next to BIOS.

Measured, not asserted. A real isolated libvirtd + sshd (the test harness's h0)
and a real dashboard managing it over SSH; each desktop is started through the
VM service (as the broker does: definition aligned, swtpm started) and stopped
again, ``--rounds`` times:

* BIOS: the harness's banner boot sector, on the domain type the dashboard picks
  (KVM where the host has it), and on TCG for comparison;
* UEFI + Secure Boot + TPM: the suite's signed EFI test program under Debian's test
  keys, on the domain type the dashboard picks for it (TCG where KVM cannot run OVMF).

Per desktop: start call until libvirt reports it running, start until the guest's
own screen shows (the banner / the EFI program), and the memory it holds then
(proportional set size of QEMU, plus swtpm's for the TPM).

    .venv/bin/python -m bench.firmware [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import libvirt

from app.vms.records import get_vm
from bench.report import RESULTS, host_line, measure_table, save
from tests.dashboard import make_settings, start_dashboard
from tests.services import efi, guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.vms.world import VmWorld, clean_host, register_hypervisor


def pss_kib(pid: int) -> int:
    """Proportional set size of a process (shared pages split among their users)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def qemu_pid(name: str) -> int:
    found = subprocess.run(["pgrep", "-f", f"guest={name},"], capture_output=True, text=True).stdout.split()
    return int(found[0])


def swtpm_pid(world: VmWorld, name: str) -> int | None:
    pidfile = world.h0.volatile_dir / f"{name}.swtpm.pid"
    return int(pidfile.read_text().strip()) if pidfile.exists() else None


async def until(check: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError("the guest's screen never showed")
        await asyncio.sleep(0.05)


async def measure(world: VmWorld, vm_id: int, colour: tuple[int, int, int], rounds: int) -> dict[str, float]:
    vm = await get_vm(world.db, vm_id)
    assert vm is not None
    running: list[float] = []
    screen: list[float] = []
    memory: list[float] = []
    conn = libvirt.open(world.h0.host.local_uri)
    try:
        for _ in range(rounds):
            started = time.monotonic()
            await world.service.power(vm_id, "start")
            await world.wait_state(vm_id, "running")
            running.append(time.monotonic() - started)
            domain = conn.lookupByName(vm.name)
            await until(lambda shown=domain: guests.screenshot(shown).fraction(colour) > 0.6)
            screen.append(time.monotonic() - started)
            kib = pss_kib(qemu_pid(vm.name))
            tpm = swtpm_pid(world, vm.name)
            if tpm is not None:
                kib += pss_kib(tpm)
            memory.append(kib / 1024)
            await world.service.power(vm_id, "poweroff")
            await world.wait_state(vm_id, "shutoff")
    finally:
        conn.close()
    return {
        "running": statistics.median(running),
        "screen": statistics.median(screen),
        "memory": statistics.median(memory),
    }


async def run(rounds: int) -> list[tuple[str, str]]:
    run_dir = RunDir()
    host = LibvirtHost(run_dir, "h0")
    await asyncio.to_thread(host.start)
    tmp = Path(tempfile.mkdtemp(prefix="firmware-bench-"))
    images = GuestImages(run_dir.sub("guests"))
    settings = make_settings(tmp, f"sqlite:///{tmp / 'bench.sqlite3'}", vms={"shutdown_grace": 10})
    tcg_settings = make_settings(
        tmp / "tcg", f"sqlite:///{tmp / 'tcg.sqlite3'}", vms={"shutdown_grace": 10, "domain_type": "qemu"}
    )
    rows: list[tuple[str, str]] = [("rounds per desktop (median shown)", str(rounds))]
    results: dict[str, dict[str, float]] = {}
    try:
        for label, chosen in (("BIOS", settings), ("BIOS on TCG", tcg_settings)):
            dashboard = await start_dashboard(chosen)
            try:
                admin = await dashboard.admin()
                h0 = await register_hypervisor(dashboard, admin, host, "h0")
                world = VmWorld(dashboard, "", [h0], images)
                name = "bios" if chosen is settings else "biostcg"
                made = await world.service.create(
                    {"name": name, "hypervisor_id": h0.id, "memory_mib": 256, "disk_size_gib": 1}
                )
                vm = await get_vm(world.db, made.vm_ids[0])
                assert vm is not None
                world.install_guest(h0, vm.disk_path, "banner")
                results[f"{label} ({vm.domain_type})"] = await measure(world, vm.id, guests.BLUE, rounds)
                if chosen is settings:
                    results.update(await uefi_desktop(world, tmp, rounds))
            finally:
                await dashboard.stop()
                await asyncio.to_thread(clean_host, host, "")
    finally:
        await asyncio.to_thread(host.stop)
        run_dir.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    for label, figures in results.items():
        rows.append((f"{label}: start -> running", f"{figures['running']:.2f} s"))
        rows.append((f"{label}: start -> guest's screen", f"{figures['screen']:.2f} s"))
        rows.append((f"{label}: memory (PSS, QEMU + swtpm)", f"{figures['memory']:.0f} MiB"))
    return rows


async def uefi_desktop(world: VmWorld, tmp: Path, rounds: int) -> dict[str, dict[str, float]]:
    h0 = world.h0
    made = await world.service.create(
        {
            "name": "uefi",
            "hypervisor_id": h0.id,
            "memory_mib": 256,
            "disk_size_gib": 1,
            "machine": "q35",
            "firmware": "uefi",
            "secure_boot": True,
            "tpm": True,
            "disk_bus": "sata",
        }
    )
    vm = await get_vm(world.db, made.vm_ids[0])
    assert vm is not None
    esp = efi.build_esp(tmp / "esp", signed=True)
    staged = Path(vm.disk_path).with_suffix(".install")
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(esp), str(staged)], check=True
    )
    shutil.chown(staged, h0.host.ssh_user, "libvirt")
    staged.replace(vm.disk_path)
    nvram = h0.images_dir / "uefi.VARS.fd"
    shutil.copyfile(efi.SNAKEOIL_VARS, nvram)
    shutil.chown(nvram, h0.host.ssh_user, h0.host.ssh_user)
    label = f"UEFI + Secure Boot + TPM ({vm.domain_type})"
    return {label: await measure(world, vm.id, efi.EFI_BLUE, rounds)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = asyncio.run(run(args.rounds))
    text = "\n".join([host_line(), "", measure_table(rows, 12)])
    print(text)
    saved = save("firmware", text + "\n")
    print(f"saved {saved.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
