"""What admins do to hypervisor records, shared by the pages and the JSON API.

Every action is audited, keeps the dashboard's known_hosts file in step with
the pinned keys, tells the hypervisor registry to pick up the change and
announces it on the live hub, so open hypervisor lists follow without a reload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from databases import Database

from app.audit import AuditLog
from app.hyper.sshkeys import HostKeyError, KnownHostsFile, fetch_host_key, fingerprint
from app.inventory import hypervisors as records
from app.live.hub import LiveHub


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
    figures: dict[str, Any] = field(default_factory=dict)

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
        return f"{name} is reachable: " + ", ".join(parts)


class HypervisorInventory:
    def __init__(self, *, db: Database, audit: AuditLog, hub: LiveHub, known_hosts: KnownHostsFile) -> None:
        self.db = db
        self.audit = audit
        self.hub = hub
        self.known_hosts = known_hosts

    async def sync_known_hosts(self) -> None:
        self.known_hosts.write(await records.known_hosts_entries(self.db))

    async def _announce(self, hypervisor_id: int, event: str) -> None:
        row = await records.get(self.db, hypervisor_id)
        if row is None:
            self.hub.publish("hypervisor", {"id": hypervisor_id, "event": event, "removed": True})
            return
        self.hub.publish(
            "hypervisor",
            {"id": row.id, "event": event, "state": row.state, "reason": row.state_reason, "name": row.name},
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
        return hypervisor_id

    async def edit(self, row: Any, values: dict[str, Any], actor: Actor) -> bool:
        """Store an edit; True when the host key must be confirmed again (new address or port)."""
        changed = {key: value for key, value in values.items() if getattr(row, key) != value}
        unpinned = await records.update(self.db, row, values)
        if unpinned:
            await self.sync_known_hosts()
        await self.audit.record(
            "hypervisor_updated",
            actor=actor.username,
            target=values["name"],
            client_address=actor.client_address,
            changed=sorted(changed),
            host_key_unpinned=unpinned,
        )
        await self._announce(row.id, "updated")
        return unpinned

    async def remove(self, row: Any, actor: Actor) -> None:
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
        await self.sync_known_hosts()
        await self.audit.record(
            "hypervisor_removed", actor=actor.username, target=row.name, client_address=actor.client_address
        )
        await self._announce(row.id, "removed")

    async def host_key_view(self, row: Any) -> HostKeyView:
        pinned = records.host_key_info(row)
        view = HostKeyView(
            presented=None,
            presented_fingerprint=None,
            pinned_fingerprint=pinned["fingerprint"] if pinned else None,
            confirmed=bool(pinned and pinned["confirmed"]),
        )
        try:
            view.presented = await fetch_host_key(row.address, row.ssh_port)
            view.presented_fingerprint = fingerprint(view.presented)
        except HostKeyError as exc:
            view.error = str(exc)
        return view

    async def confirm_host_key(self, row: Any, expected_fingerprint: str, actor: Actor) -> str:
        """Pin the key the server presents now, if it is the one the admin confirmed."""
        presented = await fetch_host_key(row.address, row.ssh_port)
        presented_fingerprint = fingerprint(presented)
        if presented_fingerprint != expected_fingerprint.strip():
            raise HostKeyNotConfirmable(
                f"{row.name} now presents the host key {presented_fingerprint}, not the confirmed "
                f"{expected_fingerprint.strip() or '(none)'}; check the fingerprint again."
            )
        previous = records.host_key_info(row)
        await records.pin_host_key(self.db, row.id, presented)
        await self.sync_known_hosts()
        await self.audit.record(
            "host_key_repinned" if previous else "host_key_pinned",
            actor=actor.username,
            target=row.name,
            client_address=actor.client_address,
            fingerprint=presented_fingerprint,
            previous_fingerprint=previous["fingerprint"] if previous else None,
        )
        await self._announce(row.id, "host_key_pinned")
        return presented_fingerprint
