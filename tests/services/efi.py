"""A tiny UEFI test program on a FAT disk, signed with Debian's Secure Boot test key (or not).

``tests/guests/efi_banner.asm`` is assembled (nasm), linked as a PE32+ EFI
application (ld), optionally signed (sbsign) with the ``PkKek-1-snakeoil`` key
that Debian's ``OVMF_VARS_4M.snakeoil.fd`` enrols, and copied to
``\\EFI\\BOOT\\BOOTX64.EFI`` of a small FAT image (mtools: no mount, no root).
Under Secure Boot with the test keys the signed program paints the screen
yellow on blue; the firmware refuses the unsigned one.
"""

from __future__ import annotations

from pathlib import Path

from .process import run

SOURCE = Path(__file__).resolve().parent.parent / "guests" / "efi_banner.asm"
SNAKEOIL_KEY = Path("/usr/share/ovmf/PkKek-1-snakeoil.key")
SNAKEOIL_CERT = Path("/usr/share/ovmf/PkKek-1-snakeoil.pem")
SNAKEOIL_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd")
# The Secure Boot test program's background (EFI_BACKGROUND_BLUE in the text console).
EFI_BLUE = (0, 0, 168)


def build_esp(out_dir: Path, *, signed: bool) -> Path:
    """``out_dir/esp-signed.img`` or ``esp-unsigned.img``: a 2 MiB FAT image booting the program."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "signed" if signed else "unsigned"
    image = out_dir / f"esp-{kind}.img"
    if image.exists():
        return image
    obj, program = out_dir / "efi_banner.obj", out_dir / "efi_banner.efi"
    run(["nasm", "-f", "win64", "-o", str(obj), str(SOURCE)])
    # -s: no symbols, or sbsign complains about data past the image.
    run(["ld", "-m", "i386pep", "--subsystem", "10", "-e", "efi_main", "--image-base", "0x10000000", "-s",
         "-o", str(program), str(obj)])  # fmt: skip
    boot = program
    if signed:
        key = out_dir / "snakeoil.key"
        run(["openssl", "rsa", "-in", str(SNAKEOIL_KEY), "-passin", "pass:snakeoil", "-out", str(key)])
        boot = out_dir / "efi_banner.signed.efi"
        run(["sbsign", "--key", str(key), "--cert", str(SNAKEOIL_CERT), "--output", str(boot), str(program)])
    temp = image.with_suffix(".tmp")
    temp.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", str(temp), "2048"])
    run(["mmd", "-i", str(temp), "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", str(temp), str(boot), "::/EFI/BOOT/BOOTX64.EFI"])
    temp.rename(image)
    return image
