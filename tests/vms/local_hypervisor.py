"""A hypervisor handle for the VM tests while ``app.hyper`` is not part of this branch.

It speaks to a harness hypervisor's real libvirtd (its local socket, libvirt-python,
lifecycle events through libvirtaio) and runs commands inside that host as its SSH
service user, so files get the owners they get over SSH. It implements the part of
the hypervisor layer contract (docs/architecture.md) the VM code uses; nothing is
simulated. Once ``app.hyper`` lands the tests use its registry instead.
"""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import libvirt
import libvirtaio
from PIL import Image

from tests.services.libvirt_host import LibvirtHost

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
_registered = False
_register_lock = threading.Lock()


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class CommandError(Exception):
    def __init__(self, argv: Sequence[str], result: CommandResult) -> None:
        self.stderr = result.stderr
        self.exit_status = result.exit_status
        super().__init__(f"{argv[0]} failed (exit status {result.exit_status}): {result.stderr.strip()}")


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: str
    persistent: bool


@dataclass(frozen=True)
class DomainEvent:
    hypervisor_id: int
    name: str
    uuid: str
    state: str
    reason: str


class LocalHypervisor:
    def __init__(self, hypervisor_id: int, host: LibvirtHost, iso_dir: str) -> None:
        self.id = hypervisor_id
        self.host = host
        self.iso_dir = iso_dir
        self.state = "up"
        self.reason = ""
        self.conn: Any = None
        self._callback_id: int | None = None
        self.listeners: list[Callable[[DomainEvent], Any]] = []

    async def open(self) -> None:
        global _registered
        with _register_lock:
            if not _registered:
                libvirtaio.virEventRegisterAsyncIOImpl()
                _registered = True
        self.conn = await asyncio.to_thread(libvirt.open, self.host.local_uri)
        self._callback_id = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, None
        )

    async def close(self) -> None:
        if self.conn is not None:
            if self._callback_id is not None:
                self.conn.domainEventDeregisterAny(self._callback_id)
            await asyncio.to_thread(self.conn.close)
            self.conn = None

    def _event(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        message = DomainEvent(
            self.id, dom.name(), dom.UUIDString(), EVENTS.get(event, "unknown"), str(detail)
        )
        for listener in self.listeners:
            listener(message)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def _dom(self, name: str) -> Any:
        return self.conn.lookupByName(name)

    # -- commands --------------------------------------------------------------------------------
    async def run(self, argv: Sequence[str], *, check: bool = True) -> CommandResult:
        completed = await asyncio.to_thread(
            self.host.run_in_host, list(argv), user=self.host.ssh_user, check=False, timeout=600
        )
        result = CommandResult(completed.returncode, completed.stdout, completed.stderr)
        if check and result.exit_status != 0:
            raise CommandError(argv, result)
        return result

    async def convert_disk(self, src: str, dst: str, on_progress: Callable[[float], Any]) -> None:
        argv = [*self.host.enter_prefix(), "runuser", "-u", self.host.ssh_user, "--",
                "qemu-img", "convert", "-p", "-O", "qcow2", src, dst]  # fmt: skip

        def convert() -> None:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert process.stdout is not None
            buffer = b""
            while chunk := process.stdout.read1(256):  # type: ignore[attr-defined]
                buffer += chunk
                for match in re.finditer(rb"\((\d+(?:\.\d+)?)/100%\)", buffer):
                    on_progress(float(match.group(1)))
                buffer = buffer[-64:]
            stderr = process.stderr.read().decode() if process.stderr else ""
            if process.wait() != 0:
                raise CommandError(argv, CommandResult(process.returncode, "", stderr))

        await asyncio.to_thread(convert)

    async def remove_file(self, path: str) -> None:
        await self.run(["rm", "-f", path])

    async def file_exists(self, path: str) -> bool:
        return (await self.run(["test", "-e", path], check=False)).exit_status == 0

    async def list_isos(self) -> list[str]:
        result = await self.run(["find", self.iso_dir, "-maxdepth", "1", "-name", "*.iso"], check=False)
        return sorted(line for line in result.stdout.splitlines() if line)

    async def create_overlay(self, base: str, path: str) -> None:
        await self.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", path])

    # -- domains ---------------------------------------------------------------------------------
    async def define(self, xml: str) -> None:
        await self._call(self.conn.defineXML, xml)

    async def undefine(self, name: str) -> None:
        await self._call(lambda: self._dom(name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM))

    async def start(self, name: str) -> None:
        await self._call(lambda: self._dom(name).create())

    async def shutdown(self, name: str) -> None:
        await self._call(lambda: self._dom(name).shutdown())

    async def destroy(self, name: str) -> None:
        await self._call(lambda: self._dom(name).destroy())

    async def reboot(self, name: str) -> None:
        await self._call(lambda: self._dom(name).reboot(0))

    async def reset(self, name: str) -> None:
        await self._call(lambda: self._dom(name).reset(0))

    async def domain_state(self, name: str) -> str:
        state, _ = await self._call(lambda: self._dom(name).state())
        return STATES.get(state, "unknown")

    async def domain_xml(self, name: str, secure: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        return str(await self._call(lambda: self._dom(name).XMLDesc(flags)))

    async def list_domains(self) -> list[DomainInfo]:
        def listing() -> list[DomainInfo]:
            return [
                DomainInfo(
                    dom.name(),
                    dom.UUIDString(),
                    STATES.get(dom.state()[0], "unknown"),
                    bool(dom.isPersistent()),
                )
                for dom in self.conn.listAllDomains()
            ]

        return await self._call(listing)

    async def update_device(self, name: str, xml: str, *, live: bool) -> None:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
        await self._call(lambda: self._dom(name).updateDeviceFlags(xml, flags))

    async def set_spice_password(self, name: str, password: str, valid_until: datetime) -> None:
        raise NotImplementedError("console passwords belong to the console tests")

    async def screenshot_png(self, name: str, max_width: int = 160) -> bytes:
        def shot() -> bytes:
            stream = self.conn.newStream(0)
            self._dom(name).screenshot(stream, 0, 0)
            chunks: list[bytes] = []
            stream.recvAll(lambda _s, data, acc: acc.append(data) or len(data), chunks)
            stream.finish()
            image = Image.open(io.BytesIO(b"".join(chunks))).convert("RGB")
            if image.width > max_width:
                image = image.resize((max_width, max(1, image.height * max_width // image.width)))
            out = io.BytesIO()
            image.save(out, "PNG")
            return out.getvalue()

        return await self._call(shot)

    async def supports_kvm(self) -> bool:
        return self.host.virt_type == "kvm"


class LocalRegistry:
    """``get`` / ``add_domain_listener`` / ``add_connection_listener`` over LocalHypervisors."""

    def __init__(self) -> None:
        self.hypervisors: dict[int, LocalHypervisor] = {}
        self.domain_listeners: list[Callable[[Any], Any]] = []
        self.connection_listeners: list[Callable[..., Any]] = []

    def get(self, hypervisor_id: int) -> LocalHypervisor:
        hv = self.hypervisors.get(hypervisor_id)
        if hv is None or hv.state != "up":
            raise LookupError(f"hypervisor {hypervisor_id} is not connected")
        return hv

    def add_domain_listener(self, callback: Callable[[Any], Any]) -> None:
        self.domain_listeners.append(callback)

    def add_connection_listener(self, callback: Callable[..., Any]) -> None:
        self.connection_listeners.append(callback)

    async def attach(self, hv: LocalHypervisor) -> None:
        await hv.open()
        hv.listeners.append(lambda event: [listener(event) for listener in self.domain_listeners])
        self.hypervisors[hv.id] = hv
        for listener in self.connection_listeners:
            listener(hv.id, "up")

    async def close(self) -> None:
        for hv in self.hypervisors.values():
            await hv.close()
