"""The database stops for 20 s while users request, keep and release desktops, admins watch their
pages and a console streams: every request meanwhile is answered, with 503 and Retry-After when
it needed the database (never a 500, never a hang); the open console keeps streaming; the
dashboard recovers by itself; and no lease, console ticket or audit record is lost or doubled.

MariaDB is stopped for real; on SQLite (the first pass) another process holds the write lock
for those 20 s, as a stuck tool would.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import sqlalchemy as sa
from databases import Database

from app.db.records import LeaseRecord
from app.db.schema import audit_log, console_tickets, leases, vms
from tests.broker.desktop_lab import ApiClient, Desktop, DesktopLab, link_through_gateway
from tests.dashboard import BrowserLikeClient
from tests.faults.conftest import FAULT_SETTINGS
from tests.proxy.spice_client import StreamClosed, TcpStream
from tests.services.libvirt_host import LibvirtHost
from tests.vms.test_database_outage import outage
from tests.vms.world import GENEROUS, WorldFactory
from tests.waiting import NeverHappened, eventually

pytestmark = pytest.mark.kvm

OUTAGE_SECONDS = 20
DATABASE_TIMEOUT = 3.0
# Longer than this, a request counts as hung: the database timeout bounds every wait.
HUNG = 2 * DATABASE_TIMEOUT + 10
USERS = 6
DESKTOPS = 3
# SPICE main channel (mini header): ask for the channel list, get SPICE_MSG_MAIN_CHANNELS_LIST.
ATTACH_CHANNELS = 104
CHANNELS_LIST = 104


# What a working dashboard answers: done, accepted ("booting"), released, or all desktops in use.
FINE = (200, 202, 204, 409)


async def until(check: Callable[[], bool], what: str, ledger: Ledger) -> None:
    try:
        await eventually(check, what, timeout=GENEROUS, interval=0.2)
    except NeverHappened as missed:
        seen = Counter((a.kind, a.status) for a in ledger.answers)
        failed = ledger.console_failures
        raise AssertionError(
            f"{missed}; answers {dict(seen)}, "
            f"{len(ledger.console_exchanges)} console exchanges, console failures {failed}"
        ) from None


@dataclass
class Answer:
    at: float
    kind: str
    status: int  # 0: no answer (an error or a hang)
    retry_after: bool
    error: str = ""


@dataclass
class Ledger:
    """What the clients were told, to compare with what the database kept."""

    answers: list[Answer] = field(default_factory=list)
    leases: set[int] = field(default_factory=set)
    released: set[int] = field(default_factory=set)
    tickets: list[str] = field(default_factory=list)
    console_exchanges: list[tuple[float, bool]] = field(default_factory=list)  # (when, answered)
    # (when, why): the open console's exchange that failed (it ends the console).
    console_failures: list[tuple[float, str]] = field(default_factory=list)

    def working_since(self, since: float) -> bool:
        """Since ``since``: a desktop handed out, an admin page served, the console answering."""
        answers = [a for a in self.answers if a.at > since and a.status in FINE]
        return (
            any(a.kind == "request" and a.status == 200 for a in answers)
            and any(a.kind.startswith("GET ") for a in answers)
            and any(ok for at, ok in self.console_exchanges if at > since)
        )

    async def call(self, kind: str, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response | None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(HUNG):
                response = await send()
        except (TimeoutError, httpx.HTTPError) as exc:
            self.answers.append(Answer(started, kind, 0, False, f"{type(exc).__name__}: {exc}"))
            return None
        self.answers.append(Answer(started, kind, response.status_code, "retry-after" in response.headers))
        return response


def channels_list(stream: TcpStream) -> bool:
    """One SPICE request/answer on a linked main channel."""
    stream.send(struct.pack("<HI", ATTACH_CHANNELS, 0))
    while True:
        kind, size = struct.unpack("<HI", stream.recv_exact(6))
        stream.recv_exact(size)
        if kind == CHANNELS_LIST:
            return True


async def churn(client: ApiClient, ledger: Ledger, seed: int, pool: int, stop: asyncio.Event) -> None:
    """A user who asks for a desktop, keeps it a little (heartbeats), then gives it back."""
    rng = random.Random(seed)
    while not stop.is_set():
        response = await ledger.call("request", lambda: client.request(pool))
        body = response.json() if response is not None and response.status_code in (200, 202) else {}
        if body.get("status") == "ready":
            desktop = Desktop(body)
            ledger.leases.add(desktop.lease_id)
            ledger.tickets.append(desktop.ticket)
            await hold(client, ledger, desktop.lease_id, rng.randint(1, 3))
        await asyncio.sleep(rng.uniform(0.1, 0.4))  # pacing: a user's think time


async def hold(client: ApiClient, ledger: Ledger, lease_id: int, heartbeats: int) -> None:
    """Keep a desktop a little (heartbeats), then give it back."""
    for _ in range(heartbeats):
        await ledger.call(
            "heartbeat",
            lambda: client.http.post(f"/api/v1/leases/{lease_id}/heartbeat", headers=client.headers),
        )
        await asyncio.sleep(0.2)  # pacing: the heartbeats' rhythm
    released = await ledger.call("release", lambda: client.release(lease_id))
    if released is not None and released.status_code == 204:
        ledger.released.add(lease_id)


async def admin_pages(admin: BrowserLikeClient, ledger: Ledger, stop: asyncio.Event) -> None:
    pages = ["/api/v1/admin/vms", "/api/v1/admin/summary", "/vms", "/sessions", "/pools"]
    while not stop.is_set():
        for page in pages:
            await ledger.call(f"GET {page}", functools.partial(admin.get, page))
        await asyncio.sleep(0.2)  # pacing: an admin clicking through


async def console(desktop: Desktop, ledger: Ledger, stop: asyncio.Event) -> None:
    linked, stream = await asyncio.to_thread(link_through_gateway, desktop)
    assert linked.ok, linked
    # The rest of the main channel's first message (SPICE_MSG_MAIN_INIT).
    await asyncio.to_thread(stream.recv_exact, linked.first_size)
    # An exchange that gets no answer for this long fails (the socket's own timeout, in its thread):
    # generous, as the display and the gateway share a loaded machine with the whole load.
    stream.sock.settimeout(GENEROUS)
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await asyncio.to_thread(channels_list, stream)
            except (OSError, StreamClosed) as exc:
                ledger.console_failures.append((started, f"{type(exc).__name__}: {exc}"))
                return
            ledger.console_exchanges.append((started, True))
            await asyncio.sleep(0.5)  # pacing: a console's steady exchanges
    finally:
        stream.close()


async def lost_or_doubled(db: Database, ledger: Ledger) -> list[str]:
    """Every lease, ticket and audit record once, and every one a client was told about kept."""
    problems: list[str] = []
    all_leases = [LeaseRecord.from_row(row) for row in await db.fetch_all(leases.select())]
    by_id = {row.id: row for row in all_leases}
    records = await db.fetch_all(audit_log.select())
    per_action: dict[str, Counter[int]] = {}
    for record in records:
        details = json.loads(record["details_json"])
        for key in ("lease_id", "ticket_id"):
            if key in details:
                per_action.setdefault(f"{record['action']}.{key}", Counter())[int(details[key])] += 1
    assigned = per_action.get("desktop_assigned.lease_id", Counter())
    ended = per_action.get("lease_released.lease_id", Counter())
    opened = per_action.get("console.open.ticket_id", Counter())
    for lease in all_leases:
        if assigned[lease.id] != 1:
            problems.append(f"lease {lease.id} has {assigned[lease.id]} hand-out audit records")
        if lease.end_reason == "released" and ended[lease.id] != 1:
            problems.append(f"released lease {lease.id} has {ended[lease.id]} release audit records")
    problems += [f"audit record of lease {i} that does not exist" for i in assigned if i not in by_id]
    problems += [f"lease {i} a client was given is gone" for i in ledger.leases if i not in by_id]
    problems += [
        f"lease {i} released (204) but not ended" for i in ledger.released if by_id[i].ended_at is None
    ]
    tickets = await db.fetch_all(console_tickets.select())
    for ticket in tickets:
        if opened[ticket["id"]] != 1:
            problems.append(
                f"console ticket {ticket['id']} has {opened[ticket['id']]} console.open audit records"
            )
    hashes = Counter(ticket["token_hash"] for ticket in tickets)
    for secret in ledger.tickets:
        if hashes[hashlib.sha256(secret.encode()).hexdigest()] != 1:
            problems.append("a console ticket a client was given is not stored once")
    active = Counter((row.user_id, row.pool_id) for row in all_leases if row.ended_at is None)
    problems += [
        f"user {user} holds {n} leases in pool {pool}" for (user, pool), n in active.items() if n > 1
    ]
    held = {row.vm_id: row.user_id for row in all_leases if row.ended_at is None}
    for vm in await db.fetch_all(sa.select(vms.c.id, vms.c.name, vms.c.assigned_user_id)):
        if vm["assigned_user_id"] != held.get(vm["id"]):
            problems.append(
                f"{vm['name']} is assigned to {vm['assigned_user_id']}, its lease says {held.get(vm['id'])}"
            )
    return problems


async def test_the_database_stops_for_20_s_under_load(
    world_factory: WorldFactory,
    hypervisor_host: LibvirtHost,
    database_backend: str,
    database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    world = await world_factory([hypervisor_host], **FAULT_SETTINGS, database_timeout=DATABASE_TIMEOUT)
    lab = DesktopLab(world)
    ledger = Ledger()
    stop = asyncio.Event()
    workers: list[asyncio.Task[None]] = []
    try:
        desktops = [await lab.desktop_vm(f"load{n}") for n in range(DESKTOPS)]
        users = [await lab.client(f"user{n}") for n in range(USERS)]
        watched = await lab.desktop_vm("watched")
        watcher_id, watcher = await lab.client("watcher")
        ids = [user_id for user_id, _ in users]
        churned = await lab.pool("churn", desktops, ids, reset_on_handout=False, keep_ready=DESKTOPS)
        single = await lab.pool("single", [watched], [watcher_id], reset_on_handout=False)
        _, watched_desktop = await watcher.ready(single)
        admin = await world.admin()

        workers.append(asyncio.create_task(console(watched_desktop, ledger, stop)))
        workers += [
            asyncio.create_task(churn(client, ledger, seed, churned, stop))
            for seed, (_, client) in enumerate(users)
        ]
        workers += [asyncio.create_task(admin_pages(admin, ledger, stop))]
        # Under way: desktops handed out, pages served, the console answering.
        await until(lambda: ledger.working_since(0.0), "the load running before the outage", ledger)

        async with outage(database_backend, request, database_url):
            went_down = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)  # the fault injected: its length is the input
            came_back = time.monotonic()
        # Recovered by itself: desktops handed out, pages served and the console answering again,
        # and nothing but successes (or "all in use") for a while.
        await until(lambda: ledger.working_since(came_back), "the dashboard working again", ledger)
        settled = time.monotonic()
        await until(lambda: ledger.working_since(settled), "a second round of work after the outage", ledger)
        assert all(a.status in FINE for a in ledger.answers if a.at > settled), [
            a for a in ledger.answers if a.at > settled and a.status not in FINE
        ]
        stop.set()
        await asyncio.gather(*workers)

        during = [a for a in ledger.answers if went_down + 1 < a.at < came_back]
        assert during, "no request was made during the outage"
        hung = [(a.kind, round(a.at - went_down, 1), a.error) for a in ledger.answers if a.status == 0]
        assert hung == [], "requests hung or failed without an answer (kind, seconds into the outage)"
        errors = [(a.kind, a.status) for a in ledger.answers if a.status >= 500 and a.status != 503]
        assert errors == [], "answered with a server error other than 503"
        assert all(a.retry_after for a in ledger.answers if a.status == 503), "a 503 without Retry-After"
        assert any(a.status == 503 for a in during), "the outage was not noticed"
        streamed = [at for at, _ in ledger.console_exchanges if went_down < at < came_back]
        assert streamed, "the open console did not stream during the outage"
        failures = [(round(at - went_down, 1), why) for at, why in ledger.console_failures]
        assert failures == [], "the open console failed (seconds into the outage, why)"

        await world.settle()
        assert await lost_or_doubled(world.db, ledger) == []
        assert ledger.leases, "no desktop was handed out at all"
    finally:
        stop.set()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await lab.aclose()
