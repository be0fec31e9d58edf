"""Tiny boot-sector guests for hypervisor tests, and helpers to look at them.

The sources are ``tests/guests/*.asm`` (NASM). Each is assembled into a 512-byte
boot sector, padded to a 1 MiB raw disk and converted to a qcow2 *base*; tests
run guests on qcow2 overlays of it, the way the VDI runs desktops.

- ``banner``: paints the 80x25 text screen solid blue with a palette stripe on
  row 0 and "KVM-VDI TEST GUEST" on row 12, then idles (``sti; hlt``).
- ``banner-acpi``: the same, and it powers itself off (ACPI S5) when the ACPI power
  button is pressed (libvirt's ``shutdown``), as an operating system would.
- ``diskwriter``: increments a boot counter on its own disk (sector 8: magic
  ``KVDI`` + little-endian u32), then paints the screen green with the count.
  The screen turns green only after the write returned.
- ``diskwriter-poweroff``: the same, then powers itself off (ACPI S5), so a test
  sees a guest-initiated shutdown.

Screens are 720x400 in text mode. :func:`screenshot` reads a libvirt screenshot
into a :class:`Screen` that can tell which colour dominates.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from PIL import Image

from tests.waiting import NeverHappened, eventually_blocking

from .process import ServiceError, run

SOURCE_DIR = Path(__file__).resolve().parent.parent / "guests"
DISK_SIZE = 1024 * 1024
COUNTER_LBA = 8
COUNTER_MAGIC = b"KVDI"

# Colours as QEMU's VGA renders the text-mode palette (6-bit DAC values scaled to 8 bits).
BLUE = (0, 0, 168)  # banner background
GREEN = (0, 168, 0)  # diskwriter: counter written
RED = (168, 0, 0)  # diskwriter: disk error
WHITE = (255, 255, 255)
PALETTE = [
    (0, 0, 0), (0, 0, 168), (0, 168, 0), (0, 168, 168), (168, 0, 0), (168, 0, 168), (168, 87, 0),
    (168, 168, 168), (87, 87, 87), (87, 87, 255), (87, 255, 87), (87, 255, 255), (255, 87, 87),
    (255, 87, 255), (255, 255, 87), (255, 255, 255),
]  # fmt: skip
TEXT_SCREEN_SIZE = (720, 400)
# Row 0 (16 pixel lines) is the palette stripe: colour i spans x = 45*i .. 45*i+44.
STRIPE_HEIGHT = 16
STRIPE_WIDTH = 45

# Under nested KVM (these CI machines) SeaBIOS alone needs ~3-4 s: every write to the
# chipset's PAM registers remaps guest memory, which is slow when nested. TCG boots the
# same guests in well under a second. Tests that are not about KVM itself can pass
# ``virt_type=FAST_VIRT_TYPE`` to domain_xml.
FAST_VIRT_TYPE = "qemu"

GUESTS: dict[str, tuple[str, list[str]]] = {
    "banner": ("banner.asm", []),
    "banner-acpi": ("banner.asm", ["-DACPI"]),
    "diskwriter": ("diskwriter.asm", []),
    "diskwriter-poweroff": ("diskwriter.asm", ["-DPOWEROFF"]),
}


def build_guest(kind: str, out_dir: Path) -> Path:
    """Assemble guest ``kind`` into ``out_dir/<kind>.qcow2`` (a base image); returns its path."""
    source, defines = GUESTS[kind]
    out_dir.mkdir(parents=True, exist_ok=True)
    boot = out_dir / f"{kind}.bin"
    raw = out_dir / f"{kind}.raw"
    base = out_dir / f"{kind}.qcow2"
    # -I: screen.inc sits next to the sources; NASM wants the trailing slash.
    run(["nasm", "-f", "bin", f"-I{SOURCE_DIR}/", *defines, "-o", str(boot), str(SOURCE_DIR / source)])
    sector = boot.read_bytes()
    if len(sector) != 512 or sector[510:] != b"\x55\xaa":
        raise ServiceError(f"{source}: not a 512-byte boot sector ({len(sector)} bytes)")
    raw.write_bytes(sector + bytes(DISK_SIZE - len(sector)))
    base.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(base)])
    raw.unlink()
    base.chmod(0o644)
    return base


def make_overlay(base: Path, path: Path) -> Path:
    """A qcow2 overlay on ``base`` at ``path`` (the guest's writable disk)."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(path)])
    path.chmod(0o644)
    return path


def image_format(path: Path) -> str:
    info = json.loads(run(["qemu-img", "info", "-U", "--output=json", str(path)]).stdout)
    return str(info["format"])


def read_boot_counter(path: Path) -> int:
    """The diskwriter's boot count stored in the image (qcow2 overlay or raw); 0 if never booted.

    Reads through qemu-img with force-share (-U), so it can look at the image of a
    running guest; qemu may still hold metadata in memory then, so read after the
    guest stopped for an exact answer.
    """
    with tempfile.TemporaryDirectory() as tmp:
        # The guest disks are 1 MiB: converting the whole chain to raw is simpler and
        # sturdier than qemu-img dd, whose skip/count semantics differ from dd's.
        out = Path(tmp) / "disk.raw"
        run(["qemu-img", "convert", "-U", "-f", image_format(path), "-O", "raw", str(path), str(out)])
        with open(out, "rb") as f:
            f.seek(COUNTER_LBA * 512)
            sector = f.read(512)
    if sector[:4] != COUNTER_MAGIC:
        return 0
    return int.from_bytes(sector[4:8], "little")


def domain_xml(
    name: str,
    disk_path: Path,
    *,
    virt_type: str,
    spice_listen: str = "127.0.0.1",
    memory_mib: int = 64,
    spice_password: str | None = None,
    disk_format: str = "qcow2",
    transient_disk: bool = False,
    on_poweroff: str = "destroy",
) -> str:
    """A minimal libvirt domain for harness self-tests (the app builds its own XML).

    Default CPU model (``-cpu host`` breaks on these machines), no NIC (iPXE would
    spin a core), qxl video, SPICE on an automatic plain port at ``spice_listen``
    (``defaultMode='insecure'``: the test hosts run SPICE with TLS, whose certificate
    only a dashboard managing the host issues; the app's own desktops are TLS only).
    """
    listen = quoteattr(spice_listen)
    passwd = f" passwd={quoteattr(spice_password)}" if spice_password else ""
    transient = "<transient/>" if transient_disk else ""
    return f"""<domain type={quoteattr(virt_type)}>
  <name>{_text(name)}</name>
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/><bootmenu enable='no'/></os>
  <features><acpi/></features>
  <on_poweroff>{_text(on_poweroff)}</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type={quoteattr(disk_format)}/>
      <source file={quoteattr(str(disk_path))}/>
      <target dev='vda' bus='virtio'/>{transient}
    </disk>
    <graphics type='spice' autoport='yes' defaultMode='insecure' listen={listen}{passwd}>
      <listen type='address' address={listen}/>
    </graphics>
    <video><model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- screens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Screen:
    """An RGB image: ``pixels`` is width*height*3 bytes, row by row."""

    width: int
    height: int
    pixels: bytes

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = (y * self.width + x) * 3
        return (self.pixels[i], self.pixels[i + 1], self.pixels[i + 2])

    def fraction(self, rgb: tuple[int, int, int], *, tolerance: int = 16, step: int = 4) -> float:
        """Share of (sampled) pixels within ``tolerance`` of ``rgb`` on every channel."""
        hits = total = 0
        for y in range(0, self.height, step):
            for x in range(0, self.width, step):
                total += 1
                if all(abs(a - b) <= tolerance for a, b in zip(self.pixel(x, y), rgb, strict=True)):
                    hits += 1
        return hits / total if total else 0.0

    def dominant_color(self, step: int = 4) -> tuple[int, int, int]:
        counts = Counter(
            self.pixel(x, y) for y in range(0, self.height, step) for x in range(0, self.width, step)
        )
        return counts.most_common(1)[0][0]


def decode_image(data: bytes) -> Screen:
    """Decode PNG/PPM/... bytes (libvirt returns PNG from QEMU 7.1 on, PPM before)."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        return Screen(rgb.width, rgb.height, rgb.tobytes())


def load_image(path: Path) -> Screen:
    """A screenshot file (Xvfb/ImageMagick, Selenium) as a Screen."""
    return decode_image(path.read_bytes())


def screenshot(domain: Any) -> Screen:
    """The current screen of a running libvirt domain (``libvirt.virDomain``)."""
    stream = domain.connect().newStream(0)
    try:
        domain.screenshot(stream, 0, 0)
        chunks = []
        while True:
            chunk = stream.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        stream.finish()
    except Exception:
        stream.abort()
        raise
    return decode_image(b"".join(chunks))


def wait_for_screen(
    domain: Any, rgb: tuple[int, int, int], *, fraction: float = 0.5, timeout: float = 30
) -> Screen:
    """Poll screenshots until ``rgb`` covers at least ``fraction`` of the screen."""
    last: Screen | None = None

    def shown() -> Screen | None:
        nonlocal last
        last = screenshot(domain)
        return last if last.fraction(rgb) >= fraction else None

    try:
        return eventually_blocking(shown, f"screen of {domain.name()}", timeout=timeout, interval=0.2)
    except NeverHappened:
        colour = last.dominant_color() if last is not None else None
        raise AssertionError(
            f"screen of {domain.name()} never became {rgb} (dominant colour {colour})"
        ) from None


class GuestImages:
    """The guest base images of one run, built on first use into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._bases: dict[str, Path] = {}

    def base(self, kind: str) -> Path:
        """Base qcow2 of ``kind`` ("banner", "banner-acpi", "diskwriter", "diskwriter-poweroff")."""
        if kind not in self._bases:
            self._bases[kind] = build_guest(kind, self.dir)
        return self._bases[kind]

    def overlay(self, kind: str, path: Path) -> Path:
        """A fresh qcow2 overlay of ``kind``'s base at ``path``: a disk a guest can boot from."""
        return make_overlay(self.base(kind), path)
