"""SPICE password epochs: consoles of one VM that are valid at the same time share one password.

SPICE checks the password whenever a client opens a channel (a second browser
tab, an admin watching, remote-viewer opening USB or audio late), so a console
must keep working while another console of the same VM is opened. An *epoch*
is the period in which one password is valid on a VM's display: the first
console opened starts it, every later one reuses its password and extends its
validity, and a revocation ends it (a new password, with every connected
client cut off).

The password is never stored: it is derived from the epoch's random ``nonce``
(in ``console_epochs``) and the dashboard's secret with HMAC-SHA256, so every
dashboard process sharing the database and the secret derives the same one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from databases import Database

from app.clock import utcnow
from app.db.records import Record, fetch_record
from app.db.schema import console_epochs

log = logging.getLogger("kvmvdi.proxy")

# 32 characters: well inside SPICE's 60-byte ticket limit and its RSA-1024 OAEP block.
PASSWORD_CHARS = 32
# An epoch this close to its end is not extended but replaced: the hypervisor's clock
# may run a little ahead, and a password about to expire must not be handed out.
RENEWAL_MARGIN = timedelta(seconds=5)


@dataclass(frozen=True)
class EpochRecord(Record):
    __table__ = console_epochs

    vm_id: int
    nonce: str
    started_at: datetime
    valid_until: datetime


@dataclass(frozen=True)
class Epoch:
    vm_id: int
    nonce: str
    valid_until: datetime
    password: str = field(repr=False)
    # True when this open started the epoch (the display's password must change).
    new: bool = False


def derive_password(secret: bytes, vm_id: int, nonce: str) -> str:
    digest = hmac.new(secret, f"kvm-vdi spice password\0{vm_id}\0{nonce}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode()[:PASSWORD_CHARS]


class ConsoleEpochs:
    def __init__(self, db: Database, *, secret: str) -> None:
        self._db = db
        self._secret = secret.encode()

    def password(self, vm_id: int, nonce: str) -> str:
        return derive_password(self._secret, vm_id, nonce)

    async def current(self, vm_id: int) -> Epoch | None:
        row = await fetch_record(
            self._db, EpochRecord, console_epochs.select().where(console_epochs.c.vm_id == vm_id)
        )
        if row is None:
            return None
        return Epoch(vm_id, row.nonce, row.valid_until, self.password(vm_id, row.nonce))

    async def extend(self, vm_id: int, validity: timedelta) -> Epoch:
        """The VM's epoch, valid at least ``validity`` from now: the current one extended, or a new one.

        Compare-and-set on the nonce, so that of two dashboards extending or starting
        an epoch at once both end up with the same password.
        """
        for _ in range(5):
            now = utcnow()
            until = now + validity
            current = await self.current(vm_id)
            if current is not None and current.valid_until > now + RENEWAL_MARGIN:
                if current.valid_until >= until:
                    return current
                await self._db.execute(
                    console_epochs.update()
                    .where(console_epochs.c.vm_id == vm_id, console_epochs.c.nonce == current.nonce)
                    .values(valid_until=until)
                )
                if await self.is_current(vm_id, current.nonce):
                    return Epoch(vm_id, current.nonce, until, current.password)
                continue
            nonce = secrets.token_urlsafe(24)
            if current is None:
                row = {"vm_id": vm_id, "nonce": nonce, "started_at": now, "valid_until": until}
                try:
                    await self._db.execute(console_epochs.insert().values(**row))
                except Exception as exc:  # the drivers' IntegrityErrors share no base class
                    # Another dashboard started one first (primary key): use theirs.
                    log.debug("console epoch of VM %s started elsewhere: %s", vm_id, exc)
                    continue
            else:
                await self._db.execute(
                    console_epochs.update()
                    .where(console_epochs.c.vm_id == vm_id, console_epochs.c.nonce == current.nonce)
                    .values(nonce=nonce, started_at=now, valid_until=until)
                )
                if not await self.is_current(vm_id, nonce):
                    continue
            return Epoch(vm_id, nonce, until, self.password(vm_id, nonce), new=True)
        raise RuntimeError(f"the console epoch of VM {vm_id} kept changing under this dashboard")

    async def end(self, vm_id: int) -> None:
        """End the VM's epoch: the next console gets a new password."""
        await self._db.execute(console_epochs.delete().where(console_epochs.c.vm_id == vm_id))

    async def is_current(self, vm_id: int, nonce: str) -> bool:
        """Whether ``nonce`` is the VM's epoch now (``databases`` does not report row counts: read back)."""
        value = await self._db.fetch_val(
            sa.select(console_epochs.c.nonce).where(console_epochs.c.vm_id == vm_id)
        )
        return value == nonce
