"""Hypervisor records: validating what an admin submits, storing it, pinning host keys.

The HTML forms and the JSON API share this module, so both give the same
errors (keyed by field, each naming the field) for the same input. Talking to
the hypervisor itself is ``app.hyper``'s business; this module only keeps the
records that the registry reads.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.records import Named, fetch_record, fetch_records
from app.db.retry import transaction
from app.db.schema import HYPERVISOR_TRANSPORTS, hypervisors, vms
from app.hyper.records import HypervisorRecord
from app.hyper.sshkeys import HostKeyError, fingerprint
from app.i18n import N_
from app.i18n import gettext as _
from app.i18n.formatting import format_size

LABELS = {
    "name": N_("Name"),
    "transport": N_("Transport"),
    "address": N_("SSH address"),
    "ssh_port": N_("SSH port"),
    "ssh_user": N_("SSH user"),
    "libvirt_uri": N_("libvirt URI"),
    "spice_address": N_("Console network address"),
    "spice_plain": N_("Plain SPICE for old clients"),
    "images_dir": N_("Images directory"),
    "volatile_dir": N_("Volatile directory"),
    "iso_dir": N_("ISO directory"),
    "maintenance": N_("Maintenance"),
}
FIELDS = tuple(LABELS)

DEFAULT_URIS = {"local": "qemu:///system", "test": "test:///default"}
DEFAULTS: dict[str, Any] = {
    "name": "",
    "transport": "ssh",
    "address": "",
    "ssh_port": 22,
    "ssh_user": "vdi",
    "libvirt_uri": "",
    "spice_address": "",
    "spice_plain": False,
    "images_dir": "/var/lib/kvm-vdi/images",
    "volatile_dir": "/var/lib/kvm-vdi/volatile",
    "iso_dir": "/var/lib/kvm-vdi/iso",
    "maintenance": False,
}

DEMO_NAME = "demo"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_URI_SCHEMES = {"local": ("qemu", "qemu+unix"), "test": ("test",)}
_TRUE = {"1", "true", "on", "yes"}


class HypervisorInUse(Exception):
    """The hypervisor still has virtual machines registered on it."""

    def __init__(self, name: str, vm_names: list[str]) -> None:
        self.name = name
        self.vm_names = vm_names
        shown = ", ".join(vm_names[:10]) + (" …" if len(vm_names) > 10 else "")
        super().__init__(
            f"{name} still has {len(vm_names)} virtual machine(s) registered: {shown}. "
            "Move or delete them first."
        )


@dataclass
class Validated:
    """The outcome of checking a submission: clean values, or errors by field."""

    values: dict[str, Any]
    errors: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.errors


def _text(raw: Any) -> str:
    return "" if raw is None else str(raw).strip()


def _is_host(value: str) -> bool:
    if len(value) > 253:
        return False
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(value))


def _directory(value: str) -> str | None:
    """A normalised absolute directory, or ``None`` when the value is not one."""
    if not value.startswith("/") or len(value) > 512 or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return None
    if ".." in value.split("/"):
        return None
    return posixpath.normpath(value)


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    return _text(raw).lower() in _TRUE


def validate(submitted: Mapping[str, Any]) -> Validated:
    """Check a complete submission (form fields or JSON); every error names its field."""
    raw = {field: submitted.get(field, DEFAULTS[field]) for field in FIELDS}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    name = _text(raw["name"])
    if not _NAME.fullmatch(name):
        errors["name"] = _(
            "Name: required; up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    values["name"] = name

    transport = _text(raw["transport"]).lower()
    if transport not in HYPERVISOR_TRANSPORTS:
        errors["transport"] = _("Transport: choose ssh, local or test.")
    values["transport"] = transport

    address = _text(raw["address"])
    if transport == "ssh" and not address:
        errors["address"] = _("SSH address: required for the ssh transport (a host name or IP address).")
    elif address and not _is_host(address):
        errors["address"] = _("SSH address: not a host name or IP address.")
    values["address"] = address

    port_text = _text(raw["ssh_port"]) or "22"
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        errors["ssh_port"] = _("SSH port: a number from 1 to 65535.")
    values["ssh_port"] = port if 1 <= port <= 65535 else port_text

    user = _text(raw["ssh_user"])
    if transport == "ssh" and not _USER.fullmatch(user):
        errors["ssh_user"] = _(
            "SSH user: required for the ssh transport; a system user name such as vdi "
            "(lower-case letters, digits, '_', '-', '.')."
        )
    values["ssh_user"] = user

    uri = _text(raw["libvirt_uri"])
    if transport in _URI_SCHEMES:
        uri = uri or DEFAULT_URIS[transport]
        scheme, sep, _path = uri.partition(":///")
        if not sep or scheme not in _URI_SCHEMES[transport] or any(ch.isspace() for ch in uri):
            schemes = ", ".join(f"{s}:///" for s in _URI_SCHEMES[transport])
            errors["libvirt_uri"] = _(
                "libvirt URI: for the {transport} transport it starts with {schemes}."
            ).format(transport=transport, schemes=schemes)
        values["libvirt_uri"] = uri
    else:
        # ssh hypervisors derive their URI from address, port and user.
        values["libvirt_uri"] = None

    spice = _text(raw["spice_address"])
    if spice and not _is_host(spice):
        errors["spice_address"] = _(
            "Console network address: not a host name or IP address (or leave it empty)."
        )
    values["spice_address"] = spice
    values["spice_plain"] = _flag(raw["spice_plain"])

    for field in ("images_dir", "volatile_dir", "iso_dir"):
        text = _text(raw[field])
        directory = _directory(text)
        if directory is None:
            errors[field] = _("{label}: an absolute path such as {example} (no '..').").format(
                label=_(LABELS[field]), example=DEFAULTS[field]
            )
        values[field] = directory if directory is not None else text

    values["maintenance"] = _flag(raw["maintenance"])
    return Validated(values=values, errors=errors)


def as_typed(submitted: Mapping[str, Any]) -> dict[str, Any]:
    """A rejected submission as the form shows it again: every field exactly as typed."""
    typed: dict[str, Any] = {field: str(submitted.get(field) or "") for field in FIELDS}
    typed["maintenance"] = _flag(submitted.get("maintenance"))
    typed["spice_plain"] = _flag(submitted.get("spice_plain"))
    return typed


def form_values(row: HypervisorRecord | None) -> dict[str, Any]:
    """The form's field values for an existing record (or the defaults for a new one)."""
    if row is None:
        return dict(DEFAULTS)
    values = {field: getattr(row, field) for field in FIELDS}
    values["libvirt_uri"] = values["libvirt_uri"] or ""
    return values


async def get(db: Database, hypervisor_id: int) -> HypervisorRecord | None:
    return await fetch_record(
        db, HypervisorRecord, hypervisors.select().where(hypervisors.c.id == hypervisor_id)
    )


async def get_by_name(db: Database, name: str) -> HypervisorRecord | None:
    return await fetch_record(db, HypervisorRecord, hypervisors.select().where(hypervisors.c.name == name))


async def list_all(db: Database) -> list[HypervisorRecord]:
    return await fetch_records(db, HypervisorRecord, hypervisors.select().order_by(hypervisors.c.name))


async def name_taken(db: Database, name: str, *, exclude_id: int | None = None) -> bool:
    query = sa.select(hypervisors.c.id).where(sa.func.lower(hypervisors.c.name) == name.lower())
    if exclude_id is not None:
        query = query.where(hypervisors.c.id != exclude_id)
    return await db.fetch_val(query) is not None


async def check_unique(db: Database, result: Validated, *, exclude_id: int | None = None) -> None:
    name = result.values["name"]
    if "name" not in result.errors and await name_taken(db, name, exclude_id=exclude_id):
        result.errors["name"] = _("Name: another hypervisor is already called {name}.").format(name=name)


async def create(db: Database, values: dict[str, Any]) -> int:
    hypervisor_id: int = await db.execute(
        hypervisors.insert().values(**values, state="unknown", state_reason="", created_at=utcnow())
    )
    return hypervisor_id


def endpoint_changed(row: HypervisorRecord, values: dict[str, Any]) -> bool:
    """Whether the edit points the record at another SSH server (the pinned key no longer applies)."""
    return (row.transport, row.address, row.ssh_port) != (
        values["transport"],
        values["address"],
        values["ssh_port"],
    )


async def update(db: Database, row: HypervisorRecord, values: dict[str, Any]) -> bool:
    """Store an edit; returns True when the host key was unpinned because the endpoint changed."""
    unpin = endpoint_changed(row, values) and row.host_key is not None
    changes = dict(values)
    if unpin:
        changes.update(host_key=None, host_key_confirmed=False)
    await db.execute(hypervisors.update().where(hypervisors.c.id == row.id).values(**changes))
    return unpin


async def vm_names_on(db: Database, hypervisor_id: int) -> list[str]:
    """VMs managed on the hypervisor (unclassified rows only mirror domains found there)."""
    rows = await fetch_records(
        db,
        Named,
        sa.select(vms.c.name)
        .where(vms.c.hypervisor_id == hypervisor_id, vms.c.kind != "unclassified")
        .order_by(vms.c.name),
    )
    return [row.name for row in rows]


async def delete(db: Database, row: HypervisorRecord) -> None:
    """Remove a hypervisor record; refused while VMs are registered on it.

    The unclassified rows that mirror domains found on it go with it.
    """
    async with transaction(db):
        names = await vm_names_on(db, row.id)
        if names:
            raise HypervisorInUse(row.name, names)
        await db.execute(vms.delete().where(vms.c.hypervisor_id == row.id, vms.c.kind == "unclassified"))
        await db.execute(hypervisors.delete().where(hypervisors.c.id == row.id))


async def pin_host_key(db: Database, hypervisor_id: int, key_line: str) -> None:
    fingerprint(key_line)  # refuses anything that is not a public key
    await db.execute(
        hypervisors.update()
        .where(hypervisors.c.id == hypervisor_id)
        .values(host_key=key_line.strip(), host_key_confirmed=True)
    )


async def ensure_demo_hypervisor(db: Database, data_dir: Path) -> int:
    """The demo hypervisor (libvirt's test driver), created once; returns its id.

    Its disk directories live under the dashboard's data directory, so the demo
    needs no hypervisor-side set-up and writes nothing outside ./var.
    """
    root = (data_dir / "demo").resolve()
    dirs = {"images_dir": root / "images", "volatile_dir": root / "volatile", "iso_dir": root / "iso"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    row = await get_by_name(db, DEMO_NAME)
    if row is not None:
        return int(row.id)
    values = {
        **DEFAULTS,
        **{key: str(path) for key, path in dirs.items()},
        "name": DEMO_NAME,
        "transport": "test",
        "address": "",
        "libvirt_uri": DEFAULT_URIS["test"],
    }
    return await create(db, values)


async def record_check(db: Database, hypervisor_id: int, figures: dict[str, Any]) -> None:
    """Store what a check measured (libvirt version, CPUs, memory, free space) and when."""
    allowed = {"libvirt_version", "cpus", "memory_mib", "images_free_bytes"}
    values = {key: value for key, value in figures.items() if key in allowed and value is not None}
    await db.execute(
        hypervisors.update().where(hypervisors.c.id == hypervisor_id).values(**values, last_check_at=utcnow())
    )


def host_key_info(row: HypervisorRecord) -> dict[str, Any] | None:
    if not row.host_key:
        return None
    try:
        print_ = fingerprint(row.host_key)
    except HostKeyError:
        print_ = "(unreadable key)"
    return {
        "algorithm": row.host_key.split()[0],
        "fingerprint": print_,
        "confirmed": bool(row.host_key_confirmed),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def as_json(row: HypervisorRecord, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """The API representation of a record (the pinned key by fingerprint, never more).

    ``live`` is the registry's status of the hypervisor (``Hypervisor.status()``), if connected to it.
    """
    return {
        "id": row.id,
        "name": row.name,
        "transport": row.transport,
        "address": row.address,
        "ssh_port": row.ssh_port,
        "ssh_user": row.ssh_user,
        "libvirt_uri": row.libvirt_uri,
        "spice_address": row.spice_address,
        "spice_plain": bool(row.spice_plain),
        "images_dir": row.images_dir,
        "volatile_dir": row.volatile_dir,
        "iso_dir": row.iso_dir,
        "maintenance": bool(row.maintenance),
        "state": row.state,
        "reason": row.state_note,
        "reason_code": (live or {}).get("reason_code") or "",
        "connected": bool((live or {}).get("connected")),
        "state_changed_at": _iso(row.state_changed_at),
        "last_check_at": _iso(row.last_check_at),
        "libvirt_version": row.libvirt_version,
        "cpus": row.cpus,
        "memory_mib": row.memory_mib,
        "images_free_bytes": row.images_free_bytes,
        "host_key": host_key_info(row),
        "display": display_figures(row),
    }


def human_bytes(count: int | None) -> str:
    """A size as the reader's language writes it ("1.5 GiB", "1,5 GiB")."""
    return "—" if count is None else format_size(count)


def display_figures(row: HypervisorRecord) -> dict[str, str]:
    """The figures as the hypervisor list shows them (shared by the page and live updates)."""
    return {
        "libvirt_version": row.libvirt_version or "—",
        "cpus": str(row.cpus) if row.cpus is not None else "—",
        "memory": human_bytes(row.memory_mib * 1024 * 1024) if row.memory_mib is not None else "—",
        "free": human_bytes(row.images_free_bytes),
        "last_check": row.last_check_at.strftime("%Y-%m-%d %H:%M:%S UTC") if row.last_check_at else "never",
    }
