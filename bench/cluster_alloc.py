"""Desktop requests from several replicas at once: the allocation path in separate processes.

Each worker process is one replica's allocation path (its own connection pool to its
own database node, the broker's :class:`Allocator` with its retries); the parent starts
them together and adds up their figures. A desktop request over HTTP also starts the
desktop and sets its SPICE password, which would need a running VM per request: this
measures what several replicas contend for, the database.

    python -m bench.cluster_alloc worker URL POOL_ID FIRST_USER COUNT
    (prints "ready", waits for a line on stdin, prints one JSON line of results)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa
from databases import Database

from app import db as database
from app.broker.allocation import Allocator
from app.broker.pools import get_pool
from app.broker.transactions import WriteTransactions
from app.clock import SYSTEM_CLOCK
from app.db.schema import leases, users
from bench.proxy_lab import Lab
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm

PYTHON = sys.executable


@dataclass(frozen=True)
class StormResult:
    label: str
    requests: int
    seconds: float
    latencies: list[float]
    retries: int
    granted: int
    doubles: int
    over_limit: int

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return (
            f"| {self.label} | {self.requests} | {self.requests / self.seconds:.0f} | {p50:.0f} | {p99:.0f} "
            f"| {self.retries} | {self.granted} | {self.doubles} |"
        )


HEADER = [
    "| allocation storm: first hand-outs, all requests at once | requests | per s | p50 ms | p99 ms "
    "| retried | desktops given | given twice |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


async def prepare(url: str, desktops: int, tag: str) -> tuple[int, list[int]]:
    """A pool of ``desktops`` running desktops (rows only) and as many users; (pool id, user ids)."""
    await asyncio.to_thread(database.upgrade, url)
    db = database.connect_database(url)
    await db.connect()
    try:
        hv = await add_hypervisor(db, f"storm-{tag}")
        vm_ids = [await add_vm(db, f"storm-{tag}-{i:04}", hv, state="running") for i in range(desktops)]
        user_ids = [await add_client(db, f"storm-{tag}-user{i:04}") for i in range(desktops)]
        pool_id = await add_pool(db, f"storm-{tag}", vm_ids, user_ids)
    finally:
        await db.disconnect()
    return pool_id, user_ids


async def outcome(url: str, pool_id: int) -> tuple[int, int, int]:
    """(desktops given, given to two users at once, users holding more than one) after a storm."""
    db = database.connect_database(url)
    await db.connect()
    try:
        rows = await db.fetch_all(
            sa.select(leases.c.vm_id, leases.c.user_id).where(
                leases.c.pool_id == pool_id, leases.c.ended_at.is_(None)
            )
        )
    finally:
        await db.disconnect()
    by_vm = Counter(row.vm_id for row in rows)
    by_user = Counter(row.user_id for row in rows)
    return len(by_vm), sum(1 for n in by_vm.values() if n > 1), sum(1 for n in by_user.values() if n > 1)


def storm(
    lab: Lab, label: str, urls: list[str], check_url: str, pool_id: int, user_ids: list[int]
) -> StormResult:
    """Split the users over one worker per URL, start them together, collect."""
    share = -(-len(user_ids) // len(urls))
    workers = []
    for index, url in enumerate(urls):
        chunk = user_ids[index * share : (index + 1) * share]
        if not chunk:
            continue
        argv = [
            PYTHON,
            "-m",
            "bench.cluster_alloc",
            "worker",
            url,
            str(pool_id),
            str(chunk[0]),
            str(len(chunk)),
        ]
        workers.append(lab.start(f"alloc-{label[:12]}-{index}".replace(" ", "-"), argv))
    started = time.perf_counter()
    for worker in workers:
        assert worker.popen.stdin is not None
        worker.popen.stdin.write("go\n")
        worker.popen.stdin.flush()
    results = [json.loads(worker.line(timeout=600)) for worker in workers]
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.stop()
    granted, doubles, over = asyncio.run(outcome(check_url, pool_id))
    return StormResult(
        label,
        sum(len(r["latencies"]) for r in results),
        seconds,
        [latency for r in results for latency in r["latencies"]],
        sum(r["retries"] for r in results),
        granted,
        doubles,
        over,
    )


async def _work(url: str, pool_id: int, first_user: int, count: int) -> dict[str, object]:
    db: Database = database.connect_database(url, causal_reads=True)
    await db.connect()
    try:
        pool = await get_pool(db, pool_id)
        ids = [
            int(row.id)
            for row in await db.fetch_all(
                sa.select(users.c.id).where(users.c.id >= first_user).order_by(users.c.id).limit(count)
            )
        ]
        transactions = WriteTransactions(db)
        allocator = Allocator(transactions, clock=SYSTEM_CLOCK)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        latencies: list[float] = []

        async def one(user_id: int) -> None:
            began = time.perf_counter()
            await allocator.claim(pool, user_id)
            latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(one(user_id) for user_id in ids))
        return {"latencies": latencies, "retries": transactions.retries}
    finally:
        await db.disconnect()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if not args or args[0] != "worker":
        print(__doc__)
        return 2
    url, pool_id, first_user, count = args[1], int(args[2]), int(args[3]), int(args[4])
    result = asyncio.run(_work(url, pool_id, first_user, count))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
