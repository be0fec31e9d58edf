"""Trials: does this host really run a feature? Start a tiny throw-away domain and see.

libvirt's domain capabilities describe what QEMU and libvirt support, not what
the host's KVM can do: nested KVM without System Management Mode lists UEFI,
Secure Boot and ``host-passthrough`` and then refuses to start them (or stops
the guest in its first instructions). A trial creates a transient domain with
only the feature in question (no disk, no network, no display), started paused
and destroyed with the connection if the dashboard goes away. Features that fail
at start-up are known at once; firmware is also let run for a moment, since a
firmware KVM cannot emulate stops the guest right away rather than at start.

The blocking functions run on the connection's worker threads.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import xml.etree.ElementTree as ET

import libvirt

from app.hyper.capabilities import FirmwareImage, Trial

# Features a trial exists for.
FEATURES = ("uefi", "smm", "host-model", "host-passthrough")
# How long firmware runs before it counts as working (KVM's emulation failures come at once).
WATCH_SECONDS = 2.0
TRIAL_PREFIX = "kvmvdi-trial-"


def trial_xml(
    domain_type: str,
    feature: str,
    *,
    firmware: FirmwareImage | None = None,
    nvram_path: str | None = None,
) -> str:
    """The domain a trial of ``feature`` starts: nothing but what the feature needs."""
    domain = ET.Element("domain", {"type": domain_type})
    ET.SubElement(domain, "name").text = TRIAL_PREFIX + secrets.token_hex(4)
    ET.SubElement(domain, "memory", unit="MiB").text = "128"
    ET.SubElement(domain, "vcpu").text = "1"
    machine = "q35" if feature in ("uefi", "smm") else "pc"
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64", machine=machine).text = "hvm"
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    if feature == "uefi":
        if firmware is None or nvram_path is None:
            raise ValueError("a UEFI trial needs a firmware image and an NVRAM path")
        secure = "yes" if firmware.requires_smm else "no"
        loader = ET.SubElement(os_element, "loader", readonly="yes", secure=secure, type="pflash")
        loader.text = firmware.code
        ET.SubElement(os_element, "nvram", template=firmware.vars_template).text = nvram_path
    if feature == "smm" or (feature == "uefi" and firmware is not None and firmware.requires_smm):
        ET.SubElement(features, "smm", state="on")
    if feature in ("host-model", "host-passthrough"):
        ET.SubElement(domain, "cpu", mode=feature)
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def _first_line(exc: libvirt.libvirtError) -> str:
    text = (exc.get_error_message() or str(exc)).strip()
    # QEMU's own complaint is the last line of libvirt's message ("qemu unexpectedly closed ...").
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    meaningful = [line for line in lines if "warning:" not in line]
    line = (meaningful or lines or ["refused"])[-1]
    # Drop QEMU's timestamp and program prefix: "2026-...Z qemu-system-x86_64: X" -> "X".
    if "qemu-system" in line and ": " in line:
        line = line.split(": ", 1)[1]
    return line[:300]


def run_trial(conn: libvirt.virConnect, xml: str, watch: float = 0.0) -> Trial:
    """Start ``xml`` paused; with ``watch`` let it run that long and see it keep running."""
    flags = libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY
    try:
        domain = conn.createXML(xml, flags)
    except libvirt.libvirtError as exc:
        return Trial(False, _first_line(exc))
    try:
        if watch <= 0:
            return Trial(True)
        domain.resume()
        deadline = time.monotonic() + watch
        while time.monotonic() < deadline:
            state, reason = domain.state()
            if state != libvirt.VIR_DOMAIN_RUNNING:
                names = {libvirt.VIR_DOMAIN_PAUSED: "stopped itself", libvirt.VIR_DOMAIN_CRASHED: "crashed"}
                what = names.get(state, "stopped")
                return Trial(
                    False, f"the guest {what} in its first instructions (state {state}, reason {reason})"
                )
            time.sleep(0.1)
        return Trial(True)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return Trial(False, "the guest stopped in its first instructions")
        return Trial(False, _first_line(exc))
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            domain.destroy()
