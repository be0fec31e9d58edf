"""The log-in storm itself, as its own process: N portal users log in to the broker API at once.

    python -m bench.login_storm_clients --port P --users N

Prints ``started`` when every request is on its way and then one JSON line with the
answers by status and the seconds the storm took. It stands for N thin clients on
other machines, so it runs at the lowest CPU priority: its own work must not count
as the dashboard's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time

import httpx

from bench.proxy_server import STORM_PASSWORD


async def storm(port: int, count: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits) as http:
        # Connections first, so that all log-ins are sent together; a cheap request, so that the
        # first connections are not idle past the keep-alive timeout when the log-ins go out.
        await asyncio.gather(*(http.get("/healthz") for _ in range(count)))

        async def one(n: int) -> tuple[str, float]:
            body = {"username": f"storm-{n:03d}", "password": STORM_PASSWORD}
            started = time.perf_counter()
            try:
                answer = await http.post("/api/v1/login", json=body)
            except httpx.HTTPError as exc:
                # Counted, not fatal: on a saturated machine the table still says what happened.
                seconds = time.perf_counter() - started
                print(f"log-in {n}: {exc!r} after {seconds:.1f} s", file=sys.stderr, flush=True)
                return type(exc).__name__, time.perf_counter() - started
            return str(answer.status_code), time.perf_counter() - started

        started = time.perf_counter()
        tasks = [asyncio.ensure_future(one(n)) for n in range(count)]
        await asyncio.sleep(0)
        print("started", flush=True)
        results = await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
    latencies = sorted(latency for _, latency in results)
    return {
        "statuses": dict(collections.Counter(status for status, _ in results)),
        "seconds": seconds,
        "p50": latencies[len(latencies) // 2],
        "max": latencies[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.login_storm_clients")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", type=int, default=300)
    args = parser.parse_args(argv)
    os.nice(19)
    print(json.dumps(asyncio.run(storm(args.port, args.users))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
