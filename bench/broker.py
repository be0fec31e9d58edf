"""Broker benchmark: allocation throughput on MariaDB, and Connect -> desktop on screen.

1. The allocation path (one write transaction per request: user row lock, SKIP
   LOCKED pick, assignment, lease row) on a private MariaDB server, for first
   hand-outs of a warm pool under contention and for returning users (lease
   renewal, the path a connected client takes): requests per second, p50, p99.
2. On a real hypervisor (bench/broker_connect.py): the time from the click on
   "Connect" in the client portal to the desktop on the HTML5 console, for a
   running (warm) and for a stopped desktop; and the latency of the API's
   "ready" answer with its console grant.

Prints the tables, saves them under bench/results/; asserts nothing.

    .venv/bin/python -m bench.broker [--desktops 200] [--concurrency 20] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from app import db as database
from app.broker.allocation import Allocator, Claim
from app.broker.pools import get_pool, set_users
from app.broker.transactions import WriteTransactions
from app.clock import SYSTEM_CLOCK
from bench.broker_connect import measure
from bench.report import RESULTS, save
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
    return f"| {label} | {n} | {n / elapsed:.0f} | {p50:.1f} | {p99:.1f} |"


async def allocation(url: str, desktops: int, concurrency: int) -> list[str]:
    """Markdown rows of the allocation figures."""
    out: list[str] = []
    database.upgrade(url)
    db = database.connect_database(url)
    await db.connect()
    try:
        hv = await add_hypervisor(db)
        vm_ids = [await add_vm(db, f"bench{i:04}", hv, state="running") for i in range(desktops)]
        users = [await add_client(db, f"bench-user{i:04}") for i in range(desktops)]
        pool = await get_pool(db, await add_pool(db, "bench", vm_ids, users))
        allocator = Allocator(WriteTransactions(db), clock=SYSTEM_CLOCK)
        out.append(
            f"| allocation on MariaDB: {desktops} running desktops in one pool, "
            f"{concurrency} concurrent requests | requests | per s | p50 ms | p99 ms |"
        )
        out.append("|---|---:|---:|---:|---:|")
        elapsed, lat = await timed([lambda u=u: allocator.claim(pool, u) for u in users], concurrency)
        out.append(row("first hand-out (free desktop, warm pool)", len(users), elapsed, lat))
        for again in ("first", "second"):
            elapsed, lat = await timed([lambda u=u: allocator.claim(pool, u) for u in users], concurrency)
            out.append(row(f"returning user (lease renewed), {again} return", len(users), elapsed, lat))
        late = [await add_client(db, f"late{i:04}") for i in range(desktops)]
        await set_users(db, pool.id, [*users, *late])
        elapsed, lat = await timed([lambda u=u: allocator.claim(pool, u) for u in late], concurrency)
        out.append(row("refusal (pool full: no_free_desktop)", len(late), elapsed, lat))
    finally:
        await db.disconnect()
    return out


def report(sections: list[list[str]], args: argparse.Namespace, loads: list[str]) -> str:
    lines = [
        f"# Broker benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}",
        "",
        f"Host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}.",
        f"Load average at start / end: {loads[0]} / {loads[-1]}. "
        f"Command: python -m bench.broker --desktops {args.desktops} --concurrency {args.concurrency} "
        f"--rounds {args.rounds} --api-requests {args.api_requests}.",
    ]
    for section in sections:
        lines += ["", *section]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--desktops", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="Connect runs per desktop state")
    parser.add_argument("--api-requests", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args(argv)
    if args.quick:
        args.desktops, args.rounds, args.api_requests = 50, 2, 20
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    run_dir = RunDir()
    server = MariaDB(run_dir).start()
    try:
        sections = [asyncio.run(allocation(server.url, args.desktops, args.concurrency))]
        server.reset()
        sections.append(asyncio.run(measure(server.url, run_dir, args.rounds, args.api_requests)))
    finally:
        server.stop()
        run_dir.cleanup()
    loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    text = report(sections, args, loads)
    print(text)
    print(f"saved {save('broker', text).relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
