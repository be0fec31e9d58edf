"""Broker throughput on MariaDB: desktop requests per second and latency percentiles.

Measures the allocation path (one write transaction per request: user row lock,
SKIP LOCKED pick, assignment, lease row) on a private MariaDB server, for
first hand-outs under contention and for returning users (lease renewal, the
"warm" path a connected client takes). Prints a table; asserts nothing.

    .venv/bin/python -m bench.broker [--desktops 200] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from app import db as database
from app.broker.allocation import Allocator, Claim
from app.broker.pools import get_pool
from app.broker.transactions import WriteTransactions
from tests.broker.records import add_client, add_hypervisor, add_pool, add_vm
from tests.services.mariadb import MariaDB
from tests.services.rundir import RunDir


async def timed(calls: list[Callable[[], Awaitable[Claim]]], concurrency: int) -> tuple[float, list[float]]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(call: Callable[[], Awaitable[Claim]]) -> None:
        async with gate:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    return time.perf_counter() - started, latencies


def row(label: str, n: int, elapsed: float, latencies: list[float]) -> str:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return f"| {label:<38} | {n:>6} | {n / elapsed:>8.0f} | {p50:>7.1f} | {p99:>7.1f} |"


async def run(url: str, desktops: int, concurrency: int) -> None:
    database.upgrade(url)
    db = database.connect_database(url)
    await db.connect()
    try:
        hv = await add_hypervisor(db)
        vm_ids = [await add_vm(db, f"bench{i:04}", hv, state="running") for i in range(desktops)]
        users = [await add_client(db, f"bench-user{i:04}") for i in range(desktops)]
        pool = await get_pool(db, await add_pool(db, "bench", vm_ids, users))
        allocator = Allocator(WriteTransactions(db))
        print(f"MariaDB, {desktops} running desktops in one pool, {concurrency} concurrent requests\n")
        print("| path                                   | requests | per s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|")
        elapsed, lat = await timed([lambda u=u: allocator.claim(pool, u) for u in users], concurrency)
        print(row("first hand-out (free desktop, warm)", len(users), elapsed, lat))
        for _ in range(2):
            elapsed, lat = await timed([lambda u=u: allocator.claim(pool, u) for u in users], concurrency)
            print(row("returning user (lease renewed)", len(users), elapsed, lat))
        late = [await add_client(db, f"late{i:04}") for i in range(desktops)]
        from app.broker.pools import set_users

        await set_users(db, pool.id, [*users, *late])
        elapsed, lat = await timed([lambda u=u: allocator.claim(pool, u) for u in late], concurrency)
        print(row("refusal (pool full: no_free_desktop)", len(late), elapsed, lat))
    finally:
        await db.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--desktops", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    run_dir = RunDir()
    server = MariaDB(run_dir).start()
    try:
        asyncio.run(run(server.url, args.desktops, args.concurrency))
    finally:
        server.stop()
        run_dir.cleanup()


if __name__ == "__main__":
    main()
