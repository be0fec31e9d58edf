"""What admins do to hypervisor records, shared by the pages and the JSON API.

Every action is audited, tells the hypervisor registry to pick up the change
(it reconnects, and rewrites the known_hosts file of pinned keys) and is
announced on the live hub, so open hypervisor lists follow without a reload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from databases import Database

from app.audit import AuditLog
from app.hyper.probe import ProbeResult, probe
from app.hyper.records import HypervisorRecord
from app.hyper.registry import HypervisorRegistry
from app.hyper.sshkeys import (
    DashboardKey,
    HostKeyError,
    KnownHostsFile,
    fetch_host_key,
    fingerprint,
    host_key_algorithms,
)
from app.inventory import hypervisors as records
from app.live.hub import LiveHub

# What a failed check says first, by the probe's reason code.
REASON_LABELS = {
    "auth_refused": "SSH login refused",
    "host_key_mismatch": "host key mismatch",
    "host_key_unconfirmed": "host key not confirmed",
    "timeout": "timeout",
    "unreachable": "unreachable",
    "libvirt_unavailable": "libvirt not running",
    "misconfigured": "misconfigured",
}


class HostKeyNotConfirmable(Exception):
    """The key an admin confirmed is not the one the server presents (any more)."""


@dataclass(frozen=True)
class Actor:
    """Who acts, from where: written into the audit log."""

    username: str
    client_address: str = ""


@dataclass
class HostKeyView:
    """What the host-key page shows: the presented key and, when one is pinned, the pinned key."""

    presented: str | None
    presented_fingerprint: str | None
    pinned_fingerprint: str | None
    confirmed: bool
    error: str | None = None

    @property
    def changed(self) -> bool:
        return (
            self.pinned_fingerprint is not None
            and self.presented_fingerprint is not None
            and self.pinned_fingerprint != self.presented_fingerprint
        )

    @property
    def matches_pinned(self) -> bool:
        return (
            self.confirmed
            and self.pinned_fingerprint is not None
            and self.pinned_fingerprint == self.presented_fingerprint
        )


@dataclass
class CheckOutcome:
    ok: bool
    reason: str = ""
    reason_code: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_probe(cls, result: ProbeResult) -> CheckOutcome:
        if not result.ok:
            code = result.reason or "unreachable"
            return cls(False, reason=f"{REASON_LABELS.get(code, code)}: {result.message}", reason_code=code)
        figures = {
            "libvirt_version": result.libvirt_version,
            "cpus": result.cpus,
            "memory_mib": result.memory_mib,
            "images_free_bytes": result.images_free_bytes,
            "hostname": result.hostname,
        }
        return cls(True, figures=figures, warnings=list(result.warnings))

    def summary(self, name: str) -> str:
        if not self.ok:
            return f"{name}: {self.reason}"
        parts = [f"libvirt {self.figures.get('libvirt_version') or '?'}"]
        if self.figures.get("cpus") is not None:
            parts.append(f"{self.figures['cpus']} CPUs")
        if self.figures.get("memory_mib") is not None:
            parts.append(f"{records.human_bytes(self.figures['memory_mib'] * 1024 * 1024)} memory")
        if self.figures.get("images_free_bytes") is not None:
            parts.append(f"{records.human_bytes(self.figures['images_free_bytes'])} free for images")
        text = f"{name} is reachable: " + ", ".join(parts)
        if self.warnings:
            text += ". Needs attention: " + "; ".join(self.warnings)
        return text


class HypervisorInventory:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditLog,
        hub: LiveHub,
        registry: HypervisorRegistry,
        key: DashboardKey,
        known_hosts: KnownHostsFile,
    ) -> None:
        self.db = db
        self.audit = audit
        self.hub = hub
        self.registry = registry
        self.key = key
        self.known_hosts = known_hosts

    async def _announce(self, hypervisor_id: int, event: str) -> None:
        row = await records.get(self.db, hypervisor_id)
        if row is None:
            self.hub.publish("hypervisor", {"id": hypervisor_id, "event": event, "removed": True})
            return
        self.hub.publish(
            "hypervisor",
            {
                "id": row.id,
                "event": event,
                "state": row.state,
                "reason": row.state_reason,
                "reason_i18n": row.state_reason_i18n,
                "name": row.name,
            },
        )

    async def add(self, values: dict[str, Any], actor: Actor) -> int:
        hypervisor_id = await records.create(self.db, values)
        await self.audit.record(
            "hypervisor_added",
            actor=actor.username,
            target=values["name"],
            client_address=actor.client_address,
            transport=values["transport"],
            address=values["address"],
        )
        await self._announce(hypervisor_id, "added")
        await self.registry.reload(hypervisor_id)
        return hypervisor_id

    async def edit(self, row: HypervisorRecord, values: dict[str, Any], actor: Actor) -> bool:
        """Store an edit; True when the host key must be confirmed again (new address or port)."""
        changed = {key: value for key, value in values.items() if getattr(row, key) != value}
        unpinned = await records.update(self.db, row, values)
        await self.audit.record(
            "hypervisor_updated",
            actor=actor.username,
            target=values["name"],
            client_address=actor.client_address,
            changed=sorted(changed),
            host_key_unpinned=unpinned,
        )
        await self._announce(row.id, "updated")
        await self.registry.reload(row.id)
        return unpinned

    async def remove(self, row: HypervisorRecord, actor: Actor) -> None:
        try:
            await records.delete(self.db, row)
        except records.HypervisorInUse as exc:
            await self.audit.record(
                "hypervisor_remove_refused",
                actor=actor.username,
                target=row.name,
                client_address=actor.client_address,
                vms=len(exc.vm_names),
            )
            raise
        await self.registry.reload(row.id)
        await self.audit.record(
            "hypervisor_removed", actor=actor.username, target=row.name, client_address=actor.client_address
        )
        await self._announce(row.id, "removed")

    async def _presented_key(self, row: HypervisorRecord) -> str:
        """The key the server presents now; of the pinned key's family when one is pinned."""
        if row.host_key:
            try:
                return await fetch_host_key(
                    row.address, row.ssh_port, algorithms=host_key_algorithms(row.host_key)
                )
            except HostKeyError:
                # The server may no longer offer that family at all: then show what it offers.
                pass
        return await fetch_host_key(row.address, row.ssh_port)

    async def host_key_view(self, row: HypervisorRecord) -> HostKeyView:
        pinned = records.host_key_info(row)
        view = HostKeyView(
            presented=None,
            presented_fingerprint=None,
            pinned_fingerprint=pinned["fingerprint"] if pinned else None,
            confirmed=bool(pinned and pinned["confirmed"]),
        )
        try:
            view.presented = await self._presented_key(row)
            view.presented_fingerprint = fingerprint(view.presented)
        except HostKeyError as exc:
            view.error = str(exc)
        return view

    async def confirm_host_key(self, row: HypervisorRecord, expected_fingerprint: str, actor: Actor) -> str:
        """Pin the key the server presents now, if it is the one the admin confirmed."""
        presented = await self._presented_key(row)
        presented_fingerprint = fingerprint(presented)
        if presented_fingerprint != expected_fingerprint.strip():
            raise HostKeyNotConfirmable(
                f"{row.name} now presents the host key {presented_fingerprint}, not the confirmed "
                f"{expected_fingerprint.strip() or '(none)'}; check the fingerprint again."
            )
        previous = records.host_key_info(row)
        await records.pin_host_key(self.db, row.id, presented)
        await self.audit.record(
            "host_key_repinned" if previous else "host_key_pinned",
            actor=actor.username,
            target=row.name,
            client_address=actor.client_address,
            fingerprint=presented_fingerprint,
            previous_fingerprint=previous["fingerprint"] if previous else None,
        )
        await self._announce(row.id, "host_key_pinned")
        await self.registry.reload(row.id)
        return presented_fingerprint

    async def check(self, row: HypervisorRecord, actor: Actor) -> CheckOutcome:
        """ "Check now": connect as the registry would; report what the hypervisor is, or why not."""
        # Checking also issues the SPICE certificate when it is missing, foreign or due.
        result = await probe(
            row,
            self.key,
            self.known_hosts,
            spice_tls=self.registry.spice_tls,
            issue=True,
        )
        outcome = CheckOutcome.from_probe(result)
        if outcome.ok:
            await records.record_check(self.db, row.id, outcome.figures)
        await self.audit.record(
            "hypervisor_checked",
            actor=actor.username,
            target=row.name,
            client_address=actor.client_address,
            ok=outcome.ok,
            reason=outcome.reason_code,
        )
        await self._announce(row.id, "checked")
        return outcome
