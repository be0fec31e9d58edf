"""A VM's firmware state on its hypervisor: its UEFI variable store (NVRAM) and its TPM 2.0 state.

Both live next to the VM's disk and belong to the dashboard's service user, so
they can be copied like the disk:

* ``<images>/<name>.VARS.fd``: the NVRAM, made from the firmware's template when
  the VM is created, copied from the initial's to each VDI child at creation and
  at populate;
* ``<images>/<name>.tpm/``: the TPM state (``swtpm_setup`` makes a fresh one;
  children get a copy of the initial's).

The TPM is an ``swtpm`` the dashboard starts right before the VM (libvirt's
"external" TPM backend): it serves ``<volatile>/<name>.swtpm.sock`` and ends with
the VM's QEMU (``--terminate``). A volatile desktop boots from throw-away copies
of both (``<volatile>/<name>.volatile.VARS.fd`` and ``.volatile.tpm``) made
before each boot and removed after it, so every boot starts from the saved state
and leaves it unchanged. Every path is confined to the hypervisor's directories;
every command is an argument vector.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from app.hyper import Hypervisor
from app.vms.disks import confined, part_path, run_script
from app.vms.records import Vm

# qemu must reach the swtpm socket: it runs in this group on Debian (libvirt-qemu is in kvm),
# and the service user is a member too (hypervisors/install.sh), so swtpm can give the socket to it.
SOCKET_GROUP = "kvm"
_TIMEOUT = 60


@dataclass(frozen=True)
class StatePaths:
    nvram: str
    tpm_dir: str
    volatile_nvram: str
    volatile_tpm_dir: str
    socket: str
    pidfile: str
    log: str

    def boot_nvram(self, volatile: bool) -> str:
        return self.volatile_nvram if volatile else self.nvram

    def boot_tpm_dir(self, volatile: bool) -> str:
        return self.volatile_tpm_dir if volatile else self.tpm_dir


def paths_of(name: str, images_dir: str, volatile_dir: str) -> StatePaths:
    return StatePaths(
        nvram=posixpath.join(images_dir, f"{name}.VARS.fd"),
        tpm_dir=posixpath.join(images_dir, f"{name}.tpm"),
        volatile_nvram=posixpath.join(volatile_dir, f"{name}.volatile.VARS.fd"),
        volatile_tpm_dir=posixpath.join(volatile_dir, f"{name}.volatile.tpm"),
        socket=posixpath.join(volatile_dir, f"{name}.swtpm.sock"),
        pidfile=posixpath.join(volatile_dir, f"{name}.swtpm.pid"),
        log=posixpath.join(volatile_dir, f"{name}.swtpm.log"),
    )


def state_paths(hv: Hypervisor, name: str) -> StatePaths:
    return paths_of(name, hv.record.images_dir, hv.record.volatile_dir)


def _copy_file(source: str, target: str) -> list[list[str]]:
    """``source`` to ``target`` through a temporary name: never half a variable store."""
    temp = part_path(target)
    return [["cp", "--", source, temp], ["chmod", "0644", "--", temp], ["mv", "-f", "-T", "--", temp, target]]


def _copy_dir(source: str, target: str) -> list[list[str]]:
    temp = part_path(target)
    return [
        ["rm", "-rf", "--", temp],
        ["cp", "-R", "-T", "--", source, temp],
        ["rm", "-rf", "--", target],
        ["mv", "-T", "--", temp, target],
    ]


async def create_fresh(
    hv: Hypervisor, names: Sequence[str], *, nvram_template: str | None, tpm: bool
) -> None:
    """A fresh variable store (from the firmware's template) and/or a fresh TPM 2.0 for each VM."""
    commands: list[list[str]] = []
    for name in names:
        paths = state_paths(hv, name)
        if nvram_template is not None:
            (nvram,) = confined(hv, [paths.nvram])
            commands += _copy_file(nvram_template, nvram)
        if tpm:
            (tpm_dir,) = confined(hv, [paths.tpm_dir])
            temp = part_path(tpm_dir)
            commands += [
                ["rm", "-rf", "--", temp],
                ["mkdir", "-m", "0700", "--", temp],
                # An endorsement key, and the TPM's NVRAM locked as on a real chip.
                [
                    "swtpm_setup",
                    "--tpm2",
                    "--tpmstate",
                    temp,
                    "--createek",
                    "--lock-nvram",
                    "--not-overwrite",
                ],
                ["rm", "-rf", "--", tpm_dir],
                ["mv", "-T", "--", temp, tpm_dir],
            ]
    await run_script(hv, commands, what="creating the firmware state")


async def copy_state(hv: Hypervisor, source: Vm, target_names: Sequence[str]) -> None:
    """Give each of ``target_names`` a copy of ``source``'s NVRAM and TPM state (those it has)."""
    src = state_paths(hv, source.name)
    commands: list[list[str]] = []
    for name in target_names:
        dst = state_paths(hv, name)
        if source.firmware == "uefi":
            commands += _copy_file(*confined(hv, [src.nvram, dst.nvram]))
        if source.tpm:
            commands += _copy_dir(*confined(hv, [src.tpm_dir, dst.tpm_dir]))
    await run_script(hv, commands, what=f"copying the firmware state of {source.name}")


async def prepare_volatile_copies(hv: Hypervisor, vm: Vm) -> None:
    """Throw-away copies of the saved NVRAM and TPM state for one volatile boot."""
    paths = state_paths(hv, vm.name)
    commands: list[list[str]] = []
    if vm.firmware == "uefi":
        commands += _copy_file(*confined(hv, [paths.nvram, paths.volatile_nvram]))
    if vm.tpm:
        commands += _copy_dir(*confined(hv, [paths.tpm_dir, paths.volatile_tpm_dir]))
    await run_script(hv, commands, what=f"preparing the firmware state of {vm.name}")


def volatile_files(hv: Hypervisor, vm: Vm) -> list[str]:
    """What one boot leaves behind: throw-away copies, the swtpm's pid file and log."""
    if vm.firmware != "uefi" and not vm.tpm:
        return []
    paths = state_paths(hv, vm.name)
    return [paths.volatile_nvram, paths.volatile_tpm_dir, paths.pidfile, paths.log, paths.socket]


def all_files(hv: Hypervisor, vm: Vm) -> list[str]:
    """Everything of ``vm``'s firmware state, saved and volatile (removed with the VM)."""
    if vm.firmware != "uefi" and not vm.tpm:
        return []
    paths = state_paths(hv, vm.name)
    return [paths.nvram, paths.tpm_dir, *volatile_files(hv, vm)]


async def remove(hv: Hypervisor, files: Sequence[str]) -> None:
    if files:
        await run_script(hv, [["rm", "-rf", "--", *confined(hv, files)]], what="removing firmware state")


async def stop_swtpm(hv: Hypervisor, vm: Vm) -> None:
    """End ``vm``'s swtpm if one is left (a start that failed before QEMU connected to it)."""
    if vm.tpm:
        (pidfile,) = confined(hv, [state_paths(hv, vm.name).pidfile])
        await hv.run(["pkill", "-x", "-F", pidfile, "swtpm"], check=False, timeout=_TIMEOUT)


async def start_swtpm(hv: Hypervisor, vm: Vm, *, volatile: bool) -> str:
    """Start ``vm``'s swtpm on its saved (or volatile) TPM state; returns the socket path."""
    paths = state_paths(hv, vm.name)
    state_dir, socket, pidfile, log = confined(
        hv, [paths.boot_tpm_dir(volatile), paths.socket, paths.pidfile, paths.log]
    )
    # A leftover of a start that failed before QEMU connected would hold the socket.
    await hv.run(["pkill", "-x", "-F", pidfile, "swtpm"], check=False, timeout=_TIMEOUT)
    swtpm = [
        "swtpm",
        "socket",
        "--tpm2",
        "--tpmstate",
        f"dir={state_dir},mode=0600",
        "--ctrl",
        f"type=unixio,path={socket},mode=0660,gid={SOCKET_GROUP}",
        "--terminate",
        "--daemon",
        "--pid",
        f"file={pidfile}",
        "--log",
        f"file={log},level=1,truncate",
    ]
    await run_script(hv, [["rm", "-f", "--", socket], swtpm], what=f"starting the TPM of {vm.name}")
    return socket
