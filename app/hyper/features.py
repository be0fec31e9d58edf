"""One connection's view of what its host can run: descriptions read once, trials run on demand.

:class:`HostFeatures` lives as long as one connection (a reconnection may reach
an upgraded host): :meth:`capabilities` reads libvirt's descriptions and QEMU's
firmware descriptors once; :meth:`trial` starts a throw-away domain for a
feature the first time someone needs to know (a VM form, a create, ``kvm-vdi
check``), never for plain BIOS desktops.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import libvirt

from app.hyper import trials
from app.hyper.capabilities import (
    DOMAIN_TYPES,
    DomainCapabilities,
    FirmwareImage,
    HostCapabilities,
    Trial,
    offered_domain_types,
    parse_domain_capabilities,
    parse_firmware_descriptors,
    pick_firmware,
)
from app.hyper.commands import CommandRunner
from app.hyper.errors import HypervisorError

T = TypeVar("T")
LibvirtCall = Callable[..., Awaitable[Any]]
FIRMWARE_DIRS = ("/usr/share/qemu/firmware", "/etc/qemu/firmware")


def _read_domain_capabilities(
    conn: libvirt.virConnect,
) -> tuple[tuple[str, ...], dict[str, DomainCapabilities]]:
    offered = offered_domain_types(conn.getCapabilities())
    domains: dict[str, DomainCapabilities] = {}
    for domain_type in offered:
        try:
            xml = conn.getDomainCapabilities(None, "x86_64", "q35", domain_type, 0)
        except libvirt.libvirtError:
            continue
        domains[domain_type] = parse_domain_capabilities(xml)
    return offered, domains


class HostFeatures:
    def __init__(self, libvirt_call: LibvirtCall, runner: CommandRunner, volatile_dir: str) -> None:
        self._call = libvirt_call
        self._runner = runner
        self._volatile_dir = volatile_dir
        self._capabilities: HostCapabilities | None = None
        self._trials: dict[tuple[str, str], Trial] = {}
        self._lock = asyncio.Lock()
        self._trial_lock = asyncio.Lock()

    async def capabilities(self) -> HostCapabilities:
        async with self._lock:
            if self._capabilities is None:
                offered, domains = await self._call(_read_domain_capabilities)
                self._capabilities = HostCapabilities(
                    domain_types=offered,
                    domains=domains,
                    firmware=tuple(await self._firmware()),
                    swtpm=await self._has_swtpm(),
                )
            return self._capabilities

    async def _firmware(self) -> list[FirmwareImage]:
        listing = await self._runner.run(
            ["find", *FIRMWARE_DIRS, "-maxdepth", "1", "-name", "*.json"], check=False, timeout=30
        )
        paths = sorted(line for line in listing.stdout.splitlines() if line.endswith(".json"))
        if not paths:
            return []
        documents: list[tuple[str, str]] = []
        for path in paths:
            # One read per file: their texts cannot be told apart reliably in one stream.
            result = await self._runner.run(["cat", "--", path], check=False, timeout=30)
            if result.exit_status == 0:
                documents.append((path, result.stdout))
        return parse_firmware_descriptors(documents)

    async def _has_swtpm(self) -> bool:
        swtpm = await self._runner.run(["swtpm", "socket", "--print-capabilities"], check=False, timeout=30)
        setup = await self._runner.run(["swtpm_setup", "--print-capabilities"], check=False, timeout=30)
        return swtpm.exit_status == 0 and setup.exit_status == 0 and "tpm-2.0" in setup.stdout

    async def trial(self, domain_type: str, feature: str) -> Trial:
        """Whether ``domain_type`` domains with ``feature`` really start here (asked once)."""
        if domain_type not in DOMAIN_TYPES or feature not in trials.FEATURES:
            raise ValueError(f"no trial for {domain_type}/{feature}")
        key = (domain_type, feature)
        # One trial at a time: two forms opened together must not start the same domain twice.
        async with self._trial_lock:
            found = self._trials.get(key)
            if found is None:
                found = await self._run(domain_type, feature)
                self._trials[key] = found
        return found

    async def _run(self, domain_type: str, feature: str) -> Trial:
        caps = await self.capabilities()
        if domain_type not in caps.domain_types:
            return Trial(False, f"the host offers no {domain_type} domains")
        if feature != "uefi":
            return await self._call(trials.run_trial, trials.trial_xml(domain_type, feature), 0.0)
        firmware = pick_firmware(list(caps.firmware), machine="q35", secure_boot=False)
        if firmware is None:
            return Trial(False, "no UEFI firmware (OVMF) is installed")
        nvram = posixpath.join(self._volatile_dir, f"{trials.TRIAL_PREFIX}{secrets.token_hex(4)}.VARS.fd")
        xml = trials.trial_xml(domain_type, feature, firmware=firmware, nvram_path=nvram)
        try:
            return await self._call(trials.run_trial, xml, trials.WATCH_SECONDS)
        finally:
            with contextlib.suppress(HypervisorError):
                await self._runner.run(["rm", "-f", "--", nvram], check=False, timeout=30)

    def known(self) -> dict[str, Any]:
        """The trials run so far (for status pages): ``"kvm/uefi": {"works": ..., "detail": ...}``."""
        return {
            f"{dt}/{feature}": {"works": t.works, "detail": t.detail}
            for (dt, feature), t in self._trials.items()
        }
