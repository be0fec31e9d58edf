"""Real rows for broker tests: hypervisors, VMs, users and pools written to the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from databases import Database

from app.auth.passwords import hash_password
from app.broker.pools import PoolSettings, create_pool, get_pool, set_users
from app.clock import utcnow
from app.db.records import PoolRecord
from app.db.schema import hypervisors, pool_vms, users, vms
from app.hyper import HypervisorRegistry

CLIENT_PASSWORD = "client-password-long"
# Hashed once: Argon2 per user would dominate tests that create a hundred users.
_CLIENT_HASH = hash_password(CLIENT_PASSWORD)


async def add_hypervisor(
    db: Database,
    name: str = "hv1",
    *,
    state: str = "up",
    uri: str = "test:///default",
    directories: Path | None = None,
) -> int:
    """A test-driver hypervisor row; with ``directories``, its images and volatile directories are
    made there and its ISO directory named there but missing (as on a fresh host)."""
    paths: dict[str, str] = {}
    if directories is not None:
        for kind in ("images", "volatile"):
            (directories / kind).mkdir(exist_ok=True)
        paths = {f"{kind}_dir": str(directories / kind) for kind in ("images", "volatile")}
        paths["iso_dir"] = str(directories / "isos")
    hv_id: int = await db.execute(
        hypervisors.insert().values(
            name=name, transport="test", libvirt_uri=uri, state=state, created_at=utcnow(), **paths
        )
    )
    return hv_id


async def add_connected_hypervisor(
    registry: HypervisorRegistry, db: Database, name: str = "hv1", *, directories: Path | None = None
) -> int:
    """A ``test:///default`` hypervisor row the running registry connects to (up, accepting work)."""
    hv_id = await add_hypervisor(db, name, directories=directories)
    await registry.reload(hv_id)
    await registry.wait_for_state(hv_id, "up", 30)
    return hv_id


async def add_vm(db: Database, name: str, hypervisor_id: int, **values: Any) -> int:
    vm_id: int = await db.execute(
        vms.insert().values(
            name=name,
            hypervisor_id=hypervisor_id,
            kind=values.pop("kind", "vdi"),
            # A state seen on the hypervisor: desktops in state "unknown" are never handed out.
            state=values.pop("state", "shutoff"),
            created_at=utcnow(),
            **values,
        )
    )
    return vm_id


async def add_client(db: Database, name: str, *, source: str = "local") -> int:
    """A client account; local ones log in with CLIENT_PASSWORD."""
    user_id: int = await db.execute(
        users.insert().values(
            username=name,
            source=source,
            role="client",
            password_hash=_CLIENT_HASH if source == "local" else None,
            created_at=utcnow(),
        )
    )
    return user_id


async def add_pool(db: Database, name: str, vm_ids: list[int], user_ids: list[int], **settings: Any) -> int:
    pool_id = await create_pool(db, PoolSettings(name=name, **settings))
    for vm_id in vm_ids:
        await db.execute(pool_vms.insert().values(pool_id=pool_id, vm_id=vm_id))
    await set_users(db, pool_id, user_ids)
    return pool_id


async def the_pool(db: Database, pool_id: int) -> PoolRecord:
    """A pool the test has just made (the test fails if it is not there)."""
    pool = await get_pool(db, pool_id)
    assert pool is not None, f"pool {pool_id} exists"
    return pool
