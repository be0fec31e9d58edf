"""A morning's log-in storm: 300 users log in through the broker API at once and ask for a
desktop. The database (the SQLite default in the first pass of the suite) must answer every
one of them: no "database is locked", no 5xx."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from app.auth import passwords
from app.clock import utcnow
from app.db.schema import leases, users
from tests.broker.records import add_connected_hypervisor, add_pool, add_vm
from tests.dashboard import DashboardFactory

USERS = 300
DESKTOPS = 20
PASSWORD = "storm-password-1"
# Argon2 at its cheapest: this test loads the database, not the password hash.
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def domain_xml(name: str) -> str:
    return f"<domain type='test'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os></domain>"


async def test_300_simultaneous_log_ins_and_desktop_requests_all_get_an_answer(
    dashboard_factory: DashboardFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passwords, "_hasher", CHEAP)
    dashboard = await dashboard_factory()
    services = dashboard.services
    db = services.db
    hv_id = await add_connected_hypervisor(services.hypervisors, db)
    hv = services.hypervisors.get(hv_id)
    desktops = []
    for index in range(DESKTOPS):
        name = f"storm{index:02d}"
        desktops.append(await add_vm(db, name, hv_id))
        await hv.define(domain_xml(name))
    password_hash = CHEAP.hash(PASSWORD)
    names = [f"user{index:03d}" for index in range(USERS)]
    await db.execute_many(
        users.insert(),
        [
            {"username": n, "source": "local", "role": "client", "password_hash": password_hash,
             "created_at": utcnow()}
            for n in names
        ],
    )  # fmt: skip
    clients = await db.fetch_all(sa.select(users.c.id).where(users.c.role == "client"))
    user_ids = [row["id"] for row in clients]
    pool = await add_pool(db, "morning", desktops, user_ids)

    async def arrive(username: str) -> tuple[int, int | str]:
        # Each user on a thin client of their own: a connection of their own.
        async with httpx.AsyncClient(base_url=dashboard.url, timeout=300) as http:
            login = await http.post("/api/v1/login", json={"username": username, "password": PASSWORD})
            if login.status_code != 200:
                return login.status_code, login.text[:200]
            bearer = {"Authorization": f"Bearer {login.json()['token']}"}
            desktop = await http.post(f"/api/v1/pools/{pool}/desktop", headers=bearer)
            return login.status_code, desktop.status_code if desktop.status_code < 500 else desktop.text[:200]

    answers = await asyncio.gather(*(arrive(name) for name in names))

    logins = Counter(status for status, _ in answers)
    assert logins == {200: USERS}, [answer for answer in answers if answer[0] != 200][:5]
    handed = Counter(desktop for _, desktop in answers)
    # Each desktop went to one user (starting: 202); everyone else heard the pool is full.
    assert handed == {202: DESKTOPS, 409: USERS - DESKTOPS}, handed
    held = await db.fetch_all(sa.select(leases.c.vm_id).where(leases.c.ended_at.is_(None)))
    assert sorted(row["vm_id"] for row in held) == sorted(desktops)
