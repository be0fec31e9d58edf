"""A Linux guest that runs qemu-guest-agent: Debian's cloud kernel and a tiny busybox initramfs.

Built from Debian packages fetched with ``apt-get download`` (the cloud kernel,
``busybox-static``, ``qemu-guest-agent``; qemu-ga's libraries come from this
machine, which runs the same Debian release) and cached in the test cache keyed by
the package versions, like the other slow-to-make test state. The guest boots
directly from kernel and initramfs (``<kernel>``/``<initrd>``; no disk needed):
``/init`` loads the virtio modules, gives ``lo`` an extra address
(:data:`GUEST_ADDRESS`, so the agent has a real address to report), writes an
``/etc/os-release`` naming :data:`GUEST_OS`, and starts qemu-ga on the
``org.qemu.guest_agent.0`` port. Nothing in it listens to the ACPI power button
(no acpid, no button driver): a guest that ignores ACPI shutdown, which only the
agent can shut down (qemu-ga runs ``/sbin/shutdown``, here ``poweroff -f``).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import cache
from .process import ServiceError, run

GUEST_ADDRESS = "10.9.8.7"
GUEST_OS = "KVM-VDI agent test guest"
KERNEL_META = "linux-image-cloud-amd64"
PACKAGES = ("busybox-static", "qemu-guest-agent")
# In load order (busybox's insmod resolves no dependencies).
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/char/virtio_console.ko",
)

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in {" ".join(Path(m).stem for m in MODULES)}; do insmod /lib/modules/$module.ko; done
ip link set lo up
ip addr add {GUEST_ADDRESS}/32 dev lo
# No udev: find the agent's virtio port by its name.
port=""
while [ -z "$port" ]; do
  for named in /sys/class/virtio-ports/*/name; do
    [ "$(cat "$named" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/$(basename "$(dirname "$named")")
  done
  [ -n "$port" ] || sleep 0.2
done
echo "KVM-VDI AGENT GUEST: qemu-ga on $port" > /dev/console
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run &
while true; do sleep 3600; done
"""
SHUTDOWN = "#!/bin/sh\n# qemu-ga's guest-shutdown runs this.\nexec poweroff -f\n"


def _kernel_package() -> str:
    depends = run(["apt-cache", "depends", KERNEL_META]).stdout
    found = re.search(r"Depends: (linux-image-\S+-cloud-amd64)", depends)
    if not found:
        raise ServiceError(f"apt-cache knows no kernel behind {KERNEL_META} (run apt-get update)")
    return found.group(1)


def _version(package: str) -> str:
    policy = run(["apt-cache", "policy", package]).stdout
    found = re.search(r"Candidate: (\S+)", policy)
    if not found or found.group(1) == "(none)":
        raise ServiceError(f"no candidate version of {package} (run apt-get update)")
    return found.group(1)


def _libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads on this machine (the guest gets copies)."""
    output = run(["ldd", str(binary)]).stdout
    paths = [Path(match) for match in re.findall(r"(/\S+\.so[\.\d]*)", output)]
    return sorted(set(paths))


def _cpio_newc(root: Path) -> bytes:
    """A newc cpio archive of ``root`` (the initramfs format; no cpio program needed)."""
    chunks: list[bytes] = []
    inode = 1

    def entry(name: str, mode: int, data: bytes = b"") -> None:
        nonlocal inode
        encoded = name.encode() + b"\0"
        fields = [inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
        record = header + encoded
        record += b"\0" * (-len(record) % 4) + data
        record += b"\0" * (-len(record) % 4)
        chunks.append(record)
        inode += 1

    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            entry(name, 0o120777, os.readlink(path).encode())
        elif path.is_dir():
            entry(name, 0o040755)
        else:
            entry(name, 0o100000 | (path.stat().st_mode & 0o777), path.read_bytes())
    entry("TRAILER!!!", 0)
    return b"".join(chunks)


def build(out_dir: Path) -> tuple[Path, Path]:
    """``(vmlinuz, initramfs.gz)`` of the agent guest, from the cache when already made."""
    kernel_package = _kernel_package()
    versions = "-".join([kernel_package, *(f"{p}{_version(p)}" for p in PACKAGES)])
    entry = cache.entry("agent-guest", versions)
    if not entry.is_dir():
        with tempfile.TemporaryDirectory(prefix="agent-guest-") as scratch:
            work = Path(scratch)
            _make(work, kernel_package, entry)
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel, initrd = out_dir / "agent-vmlinuz", out_dir / "agent-initramfs.gz"
    shutil.copyfile(entry / "vmlinuz", kernel)
    shutil.copyfile(entry / "initramfs.gz", initrd)
    kernel.chmod(0o644)
    initrd.chmod(0o644)
    return kernel, initrd


def _make(work: Path, kernel_package: str, entry: Path) -> None:
    debs = work / "debs"
    debs.mkdir()
    # apt-get download drops privileges to _apt, which must be able to write here.
    debs.chmod(0o777)
    subprocess.run(
        ["apt-get", "download", "-q", kernel_package, *PACKAGES],
        cwd=debs,
        check=True,
        capture_output=True,
        timeout=600,
    )
    unpacked = work / "unpacked"
    for deb in debs.glob("*.deb"):
        run(["dpkg-deb", "-x", str(deb), str(unpacked)])
    (vmlinuz,) = (unpacked / "boot").glob("vmlinuz-*")
    (modules_root,) = (unpacked / "lib" / "modules").iterdir()
    root = work / "root"
    for directory in ("bin", "sbin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "lib/modules"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2(unpacked / "bin" / "busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    for module in MODULES:
        shutil.copy2(modules_root / "kernel" / module, root / "lib" / "modules" / Path(module).name)
    qemu_ga = unpacked / "usr" / "sbin" / "qemu-ga"
    shutil.copy2(qemu_ga, root / "usr" / "sbin" / "qemu-ga")
    for library in _libraries(qemu_ga):
        target = root / str(library).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library.resolve(), target)
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    (root / "sbin" / "shutdown").write_text(SHUTDOWN)
    (root / "sbin" / "shutdown").chmod(0o755)
    (root / "etc" / "os-release").write_text(f'NAME="{GUEST_OS}"\nPRETTY_NAME="{GUEST_OS}"\nID=kvmvdi-test\n')
    staged = entry.with_name(entry.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    shutil.copyfile(vmlinuz, staged / "vmlinuz")
    (staged / "initramfs.gz").write_bytes(gzip.compress(_cpio_newc(root), compresslevel=6))
    try:
        staged.rename(entry)
    except OSError:  # another run stored it first
        shutil.rmtree(staged, ignore_errors=True)
