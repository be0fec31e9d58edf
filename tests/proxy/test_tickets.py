"""Console tickets: 256 random bits, stored only as SHA-256, short-lived, revocable."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from databases import Database

from app import db as database
from app.auth.accounts import create_local_user
from app.clock import SYSTEM_CLOCK, utcnow
from app.db.schema import console_tickets, hypervisors, users, vms
from app.proxy.tickets import MAX_TICKET_TTL, TicketStore
from tests.clock import MovableClock
from tests.services.mariadb import MariaDB


@pytest.fixture
async def db(database_url_any: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(database.upgrade, database_url_any)
    connection = database.connect_database(database_url_any)
    await connection.connect()
    yield connection
    await connection.disconnect()


async def rows(db: Database) -> tuple[int, int, int]:
    user_id = await create_local_user(db, "bob", "bob-test-password-1", role="client")
    hv_id = await db.execute(
        hypervisors.insert().values(name="h", transport="test", libvirt_uri="test:///default")
    )
    vm_a = await db.execute(
        vms.insert().values(name="a", hypervisor_id=hv_id, kind="simple", created_at=utcnow())
    )
    vm_b = await db.execute(
        vms.insert().values(name="b", hypervisor_id=hv_id, kind="simple", created_at=utcnow())
    )
    return int(user_id), int(vm_a), int(vm_b)


async def test_a_ticket_is_256_random_bits_and_only_its_sha256_is_stored(db: Database) -> None:
    user_id, vm_id, _ = await rows(db)
    store = TicketStore(db, ttl=60, clock=SYSTEM_CLOCK)
    issued = await store.issue(user_id=user_id, vm_id=vm_id, host="10.0.0.5", port=5901)
    # token_urlsafe(32): 32 random bytes, 43 URL-safe characters.
    assert len(issued.secret) == 43
    stored = await db.fetch_all(console_tickets.select())
    assert len(stored) == 1
    row = dict(stored[0]._mapping)
    assert row["token_hash"] == hashlib.sha256(issued.secret.encode()).hexdigest()
    assert issued.secret not in repr(row)
    assert (row["host"], row["port"], row["user_id"], row["vm_id"]) == ("10.0.0.5", 5901, user_id, vm_id)
    assert (row["expires_at"] - row["created_at"]).total_seconds() == 60


async def test_a_ticket_opens_connections_of_its_session_until_it_expires(db: Database) -> None:
    user_id, vm_id, _ = await rows(db)
    clock = MovableClock()
    store = TicketStore(db, ttl=30, clock=clock)
    issued = await store.issue(user_id=user_id, vm_id=vm_id, host="h1", port=5900)
    first = await store.redeem(issued.secret)
    clock.advance(15)
    second = await store.redeem(issued.secret)
    assert first is not None and first == second
    assert (first.username, first.vm_name) == ("bob", "a")
    clock.advance(15)
    assert await store.redeem(issued.secret) is None


async def test_the_ticket_lifetime_is_capped_at_sixty_seconds(db: Database) -> None:
    store = TicketStore(db, ttl=3600, clock=SYSTEM_CLOCK)
    assert store.ttl == MAX_TICKET_TTL == 60


async def test_unknown_and_malformed_tickets_redeem_nothing(db: Database) -> None:
    store = TicketStore(db, ttl=60, clock=SYSTEM_CLOCK)
    assert await store.redeem("") is None
    assert await store.redeem("x" * 43) is None
    assert await store.redeem("x" * 10_000) is None


async def test_revoking_by_vm_or_user_spares_the_others(db: Database) -> None:
    user_id, vm_a, vm_b = await rows(db)
    other_user = await create_local_user(db, "carol", "carol-test-password-1", role="client")
    store = TicketStore(db, ttl=60, clock=SYSTEM_CLOCK)
    a = await store.issue(user_id=user_id, vm_id=vm_a, host="h", port=1)
    b = await store.issue(user_id=user_id, vm_id=vm_b, host="h", port=2)
    c = await store.issue(user_id=other_user, vm_id=vm_b, host="h", port=2)
    await store.revoke_for_vm(vm_a, "vm_stopped")
    assert await store.redeem(a.secret) is None
    assert await store.redeem(b.secret) is not None
    await store.revoke_for_user(user_id, "session_ended")
    assert await store.redeem(b.secret) is None
    assert await store.redeem(c.secret) is not None
    tickets = [row._mapping for row in await db.fetch_all(console_tickets.select())]
    reasons = {ticket["id"]: ticket["revoke_reason"] for ticket in tickets}
    assert reasons == {a.record.id: "vm_stopped", b.record.id: "session_ended", c.record.id: ""}


async def test_a_disabled_users_ticket_opens_nothing(db: Database) -> None:
    user_id, vm_id, _ = await rows(db)
    store = TicketStore(db, ttl=60, clock=SYSTEM_CLOCK)
    issued = await store.issue(user_id=user_id, vm_id=vm_id, host="h", port=5900)
    await db.execute(users.update().where(users.c.id == user_id).values(disabled=True))
    assert await store.redeem(issued.secret) is None


async def test_a_ticket_allows_its_display_ports_and_nothing_else(db: Database) -> None:
    user_id, vm_id, _ = await rows(db)
    store = TicketStore(db, ttl=60, clock=SYSTEM_CLOCK)
    issued = await store.issue(
        user_id=user_id, vm_id=vm_id, host="Hyper-1.example.org", port=5900, tls_port=5901
    )
    ticket = issued.record
    assert ticket.allows("hyper-1.example.org", 5900)
    assert ticket.allows("HYPER-1.EXAMPLE.ORG", 5901)
    assert not ticket.allows("hyper-1.example.org", 22)
    assert not ticket.allows("hyper-2.example.org", 5900)
    v6 = (await store.issue(user_id=user_id, vm_id=vm_id, host="::1", port=5900)).record
    assert v6.allows("[::1]", 5900)


async def test_deleting_a_vm_or_user_deletes_their_tickets(mariadb: MariaDB) -> None:
    """On MariaDB, whose foreign keys are enforced: tickets never block deleting a VM or a user."""
    mariadb.reset()
    await asyncio.to_thread(database.upgrade, mariadb.url)
    db = database.connect_database(mariadb.url)
    await db.connect()
    try:
        user_id, vm_a, vm_b = await rows(db)
        store = TicketStore(db, ttl=60, clock=SYSTEM_CLOCK)
        await store.issue(user_id=user_id, vm_id=vm_a, host="h", port=5900)
        await store.issue(user_id=user_id, vm_id=vm_b, host="h", port=5901)
        await db.execute(vms.delete().where(vms.c.id == vm_a))
        assert [row._mapping["vm_id"] for row in await db.fetch_all(console_tickets.select())] == [vm_b]
        await db.execute(users.delete().where(users.c.id == user_id))
        assert await db.fetch_all(console_tickets.select()) == []
    finally:
        await db.disconnect()
