"""Soak: the dashboard under a steady load for ten minutes, on MariaDB. Is it still the same at the end?

One dashboard process (bench.soak_server) on a private MariaDB server (the test harness's),
libvirt's test driver as its hypervisor; one load process (bench.soak_clients) holding 1,000
console websockets that move data through the dashboard's bridge to a stand-in display (each
opened with its own real console ticket, as the proxy benchmark does), 200 subscribed ``/live``
admin pages, and portal users churning desktops through the broker API (request, heartbeats,
release). This process watches the dashboard from outside:

- every ``--sample`` seconds: its RSS, CPU use and open file descriptors (/proc), its event-loop
  lag (every 0.1 s sample, p99 per interval), the same lag of an idle event loop in a process of
  its own (what the machine alone costs: the 2 cores are shared) and the load average;
- every minute: console round trips (64 B, echo) through the bridge on a connection of its own.

Reported: errors (must be 0: the load's and the dashboard's logged errors), memory growth after
the warm-up (must stay under 5 %), descriptors, lag p99 and console RTT p99 at start and end;
markdown, a plot and the raw samples under bench/results/ (``soak-<time>.md/.png/.json``).

Run it with ``make soak`` or ``.venv/bin/python -m bench.soak [--minutes 10]``. Not part of
``make bench``: it takes its minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from bench.proxy import Dashboard
from bench.proxy_clients import round_trips_while
from bench.proxy_lab import TICK, Lab, Process, free_port
from bench.report import RESULTS
from bench.soak_report import Probe, Sample, Soak, error_count, percentile, save
from bench.soak_server import LAG_INTERVAL
from tests.services.mariadb import MariaDB
from tests.services.rundir import RunDir

PYTHON = sys.executable
# A probe's console lasts at most this long: the bench client answers no websocket pings (20 s).
PROBE_SECONDS = 10.0
PROBE_WARMUP = 5
# What the dashboard's log says when something went wrong (its level is WARNING).
SERVER_ERROR = re.compile(r"^(ERROR|CRITICAL|Traceback)|:ERROR:|:CRITICAL:", re.MULTILINE)


def load_text() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def rss_kib(pid: int) -> int:
    """The process's own resident memory (its children, the hypervisor's daemons, not counted)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def database(url_file: Path | None) -> Iterator[tuple[str, str]]:
    """The database URL and its kind: the one in the file given, else a private MariaDB server's."""
    if url_file is not None:
        url = url_file.read_text().strip()
        yield url, {"mysql": "MariaDB"}.get(url.split(":", 1)[0], url.split(":", 1)[0])
        return
    run_dir = RunDir()
    server = MariaDB(run_dir).start()
    try:
        yield server.url, f"MariaDB {server.version}".strip()
    finally:
        server.stop()
        run_dir.cleanup()


class Watch:
    """The look from outside at the dashboard process, and the console probes through it."""

    def __init__(self, soak: Soak, server: Process, control: Process, dashboard: Dashboard, rtt: int) -> None:
        self.soak = soak
        self.server = server
        self.control = control
        self.dashboard = dashboard
        self.rtt = rtt
        self.started = time.monotonic()
        self._cpu = (self.started, cpu_seconds(server.pid))

    def cpu_percent(self) -> float:
        """The dashboard process's CPU use since the last look (100: one core)."""
        now, used = time.monotonic(), cpu_seconds(self.server.pid)
        before, self._cpu = self._cpu, (now, used)
        return round(100 * (used - before[1]) / max(1e-6, now - before[0]), 1)

    @staticmethod
    def lag_ms(process: Process) -> list[float]:
        assert process.popen.stdin is not None
        process.popen.stdin.write("lag\n")
        process.popen.stdin.flush()
        return [seconds * 1000 for seconds in json.loads(process.line())]

    def sample(self) -> Sample:
        lag, control = self.lag_ms(self.server), self.lag_ms(self.control)
        self.soak.lag_ms += lag
        self.soak.control_lag_ms += control
        sample = Sample(
            at=round(time.monotonic() - self.started, 1),
            rss_kib=rss_kib(self.server.pid),
            fds=open_fds(self.server.pid),
            cpu_percent=self.cpu_percent(),
            lag_p99_ms=round(percentile(lag, 0.99), 2),
            lag_max_ms=round(max(lag, default=0.0), 2),
            control_lag_p99_ms=round(percentile(control, 0.99), 2),
            load1=os.getloadavg()[0],
        )
        self.soak.samples.append(sample)
        return sample

    def probe(self) -> Probe:
        at = time.monotonic() - self.started
        until = at + self.started + PROBE_SECONDS
        trips = [0]

        def running() -> bool:
            trips[0] += 1
            return trips[0] <= self.rtt + PROBE_WARMUP and time.monotonic() < until

        try:
            rtt = round_trips_while(self.dashboard.websocket("probe"), running, warmup=PROBE_WARMUP)
        except OSError as exc:  # ConnectionError included: the console closed under it
            self.soak.probe_errors.append(f"{at:.0f} s: {exc!r}")
            rtt = []
        probe = Probe(round(at, 1), round(percentile(rtt, 0.5), 1), round(percentile(rtt, 0.99), 1), len(rtt))
        self.soak.probes.append(probe)
        return probe

    def run(self, seconds: float, every: float) -> None:
        next_probe = 0.0
        while (now := time.monotonic() - self.started) < seconds:
            if now >= next_probe:
                p = self.probe()
                print(
                    f"  {p.at:6.0f} s  console RTT p50 {p.p50_us:.0f} µs, p99 {p.p99_us:.0f} µs", flush=True
                )
                next_probe += 60.0
            s = self.sample()
            print(
                f"  {s.at:6.0f} s  RSS {s.rss_kib / 1024:.1f} MiB, {s.fds} fds, "
                f"lag p99 {s.lag_p99_ms:.1f} ms, load {s.load1:.2f}",
                flush=True,
            )
            time.sleep(max(0.0, min(every, seconds - (time.monotonic() - self.started))))
        self.probe()
        self.sample()


def run(args: argparse.Namespace, lab_dir: Path, soak: Soak) -> None:
    with database(args.database_url_file) as (url, kind):
        soak.settings["database"] = kind
        lab = Lab(lab_dir)
        try:
            display_port = free_port()
            lab.start("display", [PYTHON, "-m", "bench.proxy_peers", "display", str(display_port)])
            control = lab.start("control", [PYTHON, "-m", "bench.soak_server", "--control"])
            server = lab.start(
                "dashboard",
                [
                    PYTHON, "-m", "bench.soak_server", "--dir", str(lab_dir / "dashboard"),
                    "--database-url-file", str(secret_file(lab_dir / "database-url", url)),
                    "--display-port", str(display_port), "--desktops", str(args.desktops),
                    "--users", str(args.churn_users), *(["--no-reset"] if args.no_reset else []),
                ],
                ready_line=None,
            )  # fmt: skip
            _ready, port, pool = server.line(timeout=300).split()
            dashboard = Dashboard(server, int(port), 0)
            clients = lab.start(
                "clients",
                [
                    PYTHON, "-m", "bench.soak_clients", "--port", port, "--pool", pool,
                    "--live", str(args.live), "--churn-users", str(args.churn_users),
                    "--every", str(args.every), "--message", str(args.message),
                ],
                ready_line=None,
            )  # fmt: skip
            assert clients.popen.stdin is not None
            # Each console's ticket as it is issued (a ticket opens connections for a minute only).
            for _ in range(args.consoles):
                vm_id, secret = dashboard.ticket()
                clients.popen.stdin.write(f"console {vm_id} {secret}\n")
            clients.popen.stdin.write("opened\n")
            clients.popen.stdin.flush()
            said = clients.line(timeout=600)
            if said != "started":
                raise RuntimeError(f"the load did not start: {said!r}")
            print(f"load started: {args.consoles} consoles, {args.live} live pages, churn", flush=True)
            Watch(soak, server, control, dashboard, args.rtt).run(args.minutes * 60, args.sample)
            clients.popen.stdin.write("stop\n")
            clients.popen.stdin.flush()
            soak.clients = json.loads(clients.line(timeout=300))
            # End of its stdin: the dashboard stops, its desktops and hypervisor are cleaned up.
            assert server.popen.stdin is not None
            server.popen.stdin.close()
            server.popen.wait(timeout=300)
        finally:
            lab.stop()
            log = (lab_dir / "dashboard.log").read_text(errors="replace")
            soak.server_errors = [
                m.group(0) + log[m.end() : log.find("\n", m.end())] for m in SERVER_ERROR.finditer(log)
            ]


def secret_file(path: Path, text: str) -> Path:
    """A file only this user reads: the database URL (it holds a password) never goes in argv."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up (default: a fifth of the run, at most 120)"
    )
    parser.add_argument("--consoles", type=int, default=1000)
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--churn-users", type=int, default=8)
    parser.add_argument("--desktops", type=int, default=8, help="running desktops in the pool (real guests)")
    parser.add_argument(
        "--no-reset", action="store_true", help="released desktops go back without the pool's default reset"
    )
    parser.add_argument("--every", type=float, default=5.0, help="seconds between a console's messages")
    parser.add_argument("--message", type=int, default=1024, help="bytes per console message")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between looks at the dashboard")
    parser.add_argument("--rtt", type=int, default=500, help="console round trips per probe")
    parser.add_argument(
        "--database-url-file",
        type=Path,
        help="a file with the URL of the database to use instead of a private MariaDB",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to save the report")
    args = parser.parse_args(argv)
    if args.churn_users > args.desktops:
        parser.error("--churn-users must not exceed --desktops (each user holds one desktop at a time)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    warmup = args.warmup if args.warmup is not None else min(120.0, args.minutes * 60 / 5)
    soak = Soak(
        command=shlex.join(["python", "-m", "bench.soak", *(argv if argv is not None else sys.argv[1:])]),
        host=f"Host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}.",
        settings={
            "minutes": args.minutes,
            "warmup_seconds": warmup,
            "desktops": args.desktops,
            "reset": not args.no_reset,
            "every": args.every,
            "message": args.message,
            "lag_interval": LAG_INTERVAL,
        },
        loads=[load_text()],
    )
    lab_dir = Path(tempfile.mkdtemp(prefix="kvmvdi-soak-"))
    try:
        run(args, lab_dir, soak)
    finally:
        soak.loads.append(load_text())
        if os.environ.get("KVMVDI_KEEP_SOAK_DIR"):
            print(f"kept {lab_dir}")
        else:
            shutil.rmtree(lab_dir, ignore_errors=True)
    paths = save(soak, args.results, f"soak-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    print()
    print(paths[0].read_text())
    for path in paths:
        print(f"saved {path}")
    return 1 if error_count(soak) else 0


if __name__ == "__main__":
    sys.exit(main())
