"""Console latency during a log-in storm: Argon2 off the event loop, a bounded number at once.

The real dashboard (bench.proxy_server) serves a console through its websocket bridge to
an echoing display (bench.proxy_peers); a client in this process measures 64-byte round
trips through it, first idle, then while 300 portal users log in to the broker API at
once (bench.login_storm_clients, a process of its own at the lowest CPU priority, standing
for 300 thin clients elsewhere). Every log-in verifies an Argon2id hash with the
library's default parameters (64 MiB, 3 passes, 4 lanes).

Configurations, side by side: the default (one worker thread, each check in Linux's idle
CPU class for its first 2 s, then at nice 10), the same on a worker process, and one
worker thread reniced only (nice 10, then nice 0), as before the idle class. Target: round-trip p99
during the storm within 2x the idle p99, every log-in answered 200.

Run it with ``make bench`` or ``.venv/bin/python -m bench.login_storm [--users N]``; the
table is printed and saved under bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath

from bench.proxy import Dashboard, percentile
from bench.proxy_clients import round_trips, round_trips_while
from bench.proxy_lab import Lab, free_port
from bench.report import host_line, save

PYTHON = sys.executable
CONSOLE_SECONDS = 8.0
CONFIGURATIONS = {
    "1 worker thread, idle class for 2 s, then nice 10 (default)": [
        "argon2_worker_kind=thread", "argon2_worker_nice=10", "argon2_idle_seconds=2",
    ],
    "1 worker process, idle class for 2 s, then nice 10": [
        "argon2_worker_kind=process", "argon2_worker_nice=10", "argon2_idle_seconds=2",
    ],
    "1 worker thread, nice 10 only": [
        "argon2_worker_kind=thread", "argon2_worker_nice=10", "argon2_idle_seconds=0",
    ],
    "1 worker thread, nice 0 only": [
        "argon2_worker_kind=thread", "argon2_worker_nice=0", "argon2_idle_seconds=0",
    ],
}  # fmt: skip


@dataclass
class Outcome:
    name: str
    idle: list[float] = field(default_factory=list)
    storm: list[float] = field(default_factory=list)
    answers: dict[str, object] = field(default_factory=dict)


def measure(lab: Lab, name: str, security: list[str], users: int, idle_count: int) -> Outcome:
    display_port, port, gateway_port = free_port(), free_port(), free_port()
    workdir = lab.dir / f"config-{len(list(lab.dir.iterdir()))}"
    workdir.mkdir()
    lab.start(f"display-{workdir.name}", [PYTHON, "-m", "bench.proxy_peers", "display", str(display_port)])
    server = lab.start(
        f"dashboard-{workdir.name}",
        [
            PYTHON, "-m", "bench.proxy_server", "--dir", str(workdir), "--port", str(port),
            "--gateway-port", str(gateway_port), "--display-port", str(display_port), "--users", str(users),
            *(arg for pair in security for arg in ("--security", pair)),
        ],
    )  # fmt: skip
    dashboard = Dashboard(server, port, gateway_port)
    outcome = Outcome(name)
    outcome.idle = round_trips(dashboard.websocket("idle"), idle_count)
    clients = lab.start(
        f"storm-{workdir.name}",
        [PYTHON, "-m", "bench.login_storm_clients", "--port", str(port), "--users", str(users)],
        ready_line="started",
    )
    while clients.popen.poll() is None:
        # A fresh console every few seconds: the bench client answers no websocket pings (20 s).
        until = time.monotonic() + CONSOLE_SECONDS

        def console_on(until: float = until) -> bool:
            return clients.popen.poll() is None and time.monotonic() < until

        outcome.storm += round_trips_while(dashboard.websocket("storm"), console_on, warmup=20)
    outcome.answers = json.loads(clients.line(timeout=30))
    print(
        f"  {name}: idle p99 {percentile(outcome.idle, 0.99):.0f} µs, storm p99 "
        f"{percentile(outcome.storm, 0.99):.0f} µs over {len(outcome.storm)} round trips, "
        f"log-ins {outcome.answers['statuses']} in {outcome.answers['seconds']:.1f} s",
        flush=True,
    )
    return outcome


def report(outcomes: list[Outcome], users: int) -> str:
    lines = [
        f"# Console latency during a log-in storm, {datetime.datetime.now().isoformat(timespec='seconds')}",
        "",
        host_line(),
        f"{users} portal users log in to `POST /api/v1/login` at once (Argon2id, library defaults) while a "
        "console round-trips 64 B through the websocket bridge; the storm's clients run at nice 19.",
        "",
        "| configuration | idle p50 µs | idle p99 µs | storm p50 µs | storm p99 µs | storm max ms "
        "| p99 storm/idle | log-ins | storm s | log-in p50 s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for o in outcomes:
        idle99, storm99 = percentile(o.idle, 0.99) or 0.0, percentile(o.storm, 0.99) or 0.0
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(o.answers["statuses"].items()))  # type: ignore[union-attr]
        lines.append(
            f"| {o.name} | {percentile(o.idle, 0.5):.0f} | {idle99:.0f} | {percentile(o.storm, 0.5):.0f} "
            f"| {storm99:.0f} | {max(o.storm) / 1000:.1f} | {storm99 / idle99:.2f}x | {statuses} "
            f"| {o.answers['seconds']:.1f} | {o.answers['p50']:.1f} |"
        )
    default = outcomes[0]
    ratio = (percentile(default.storm, 0.99) or 0.0) / (percentile(default.idle, 0.99) or 1.0)
    all_ok = default.answers["statuses"] == {"200": users}
    lines += [
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
        f"| round-trip p99 during the storm ≤ 2x idle (default configuration) | {ratio:.2f}x "
        f"| {'yes' if ratio <= 2 else 'NO'} |",
        f"| every log-in answered 200 (default configuration) | {'all' if all_ok else 'not all'} "
        f"| {'yes' if all_ok else 'NO'} |",
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def lab_dir() -> Iterator[FsPath]:
    path = FsPath(tempfile.mkdtemp(prefix="kvmvdi-bench-storm-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.login_storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--idle", type=int, default=3000, help="idle round trips")
    parser.add_argument("--only-default", action="store_true", help="measure the default configuration only")
    args = parser.parse_args(argv)
    outcomes = []
    with lab_dir() as directory:
        for name, security in CONFIGURATIONS.items():
            lab = Lab(directory)
            try:
                outcomes.append(measure(lab, name, security, args.users, args.idle))
            finally:
                lab.stop()
            time.sleep(2)
            if args.only_default:
                break
    text = report(outcomes, args.users)
    print()
    print(text)
    print(f"saved {save('login_storm', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
