"""Console proxy benchmark: the dashboard's websocket bridge and CONNECT gateway against
websockify, a plain asyncio TCP relay and a direct connection, side by side in one run.

Every proxy runs in its own process; the "VM" is a protocol-independent TCP display
(bench/proxy_peers.py) and the client is a blocking-socket program in this process, so
the client's cost never lands in a proxy's CPU figure. Measured, on loopback:

- bulk throughput display -> client (MB/s, median of interleaved rounds) and the proxy
  process tree's CPU seconds per GiB moved (/proc utime+stime);
- small-message (64 B) round trips through an echoing display, p50/p99 in microseconds;
- memory per idle connection with 1,000 open: (RSS after - RSS before) / 1000 of the
  proxy's process tree (PSS too: websockify forks a process per connection).

Run it with ``make bench`` or ``.venv/bin/python -m bench.proxy [--quick]``. It prints a
table, checks the targets and saves the table under bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path as FsPath

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.tlsca import DashboardCA, ServerIdentity
from bench.proxy_clients import Path, open_idle, round_trips, start_stream
from bench.proxy_lab import REPO, Lab, Process, cpu_seconds, free_port, memory_kib
from bench.report import save

PYTHON = sys.executable
GIB = 1 << 30


@dataclass
class Dashboard:
    process: Process
    port: int
    gateway_port: int

    def ticket(self, tls: bool = False) -> tuple[int, str]:
        assert self.process.popen.stdin is not None
        self.process.popen.stdin.write("ticket-tls\n" if tls else "ticket\n")
        self.process.popen.stdin.flush()
        _, vm_id, secret = self.process.line().split()
        return int(vm_id), secret

    def websocket(self, name: str, *, tls: bool = False) -> Path:
        vm_id, secret = self.ticket(tls)
        return Path(name, "ws", self.port, ws_path=f"/console/ws/{vm_id}", cookie=f"kvmvdi_console={secret}")

    def gateway(self, name: str, display_port: int) -> Path:
        _, secret = self.ticket()
        return Path(name, "connect", self.gateway_port, target=f"127.0.0.1:{display_port}", ticket=secret)


# --- candidates --------------------------------------------------------------------------------


@dataclass
class Candidate:
    name: str
    pid: int | None  # the proxy process measured; None for the direct connection
    path: Path
    refresh: object = None  # callable giving a fresh Path (tickets expire)
    mbps: list[float] = field(default_factory=list)
    cpu_per_gib: list[float] = field(default_factory=list)
    rtt: list[float] = field(default_factory=list)
    idle_rss_kib: float | None = None
    idle_pss_kib: float | None = None

    def fresh(self) -> Path:
        if callable(self.refresh):
            self.path = self.refresh()
        return self.path


def tls_display(lab: Lab) -> tuple[int, FsPath]:
    """A TLS display with a certificate from a dashboard CA (as hypervisors get theirs); its port
    and the CA's directory."""
    ca_dir = lab.dir / "ca"
    ca = DashboardCA.load_or_create(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
        .sign(key, hashes.SHA256())
    )
    cert = ca.sign(
        request.public_bytes(serialization.Encoding.PEM), ServerIdentity("127.0.0.1", ("127.0.0.1",))
    )
    (lab.dir / "display.pem").write_text(cert)
    (lab.dir / "display.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    port = free_port()
    lab.start(
        "display-tls",
        [
            PYTHON, "-m", "bench.proxy_peers", "display", str(port),
            "--tls-cert", str(lab.dir / "display.pem"), "--tls-key", str(lab.dir / "display.key"),
        ],
    )  # fmt: skip
    return port, ca_dir


def build(lab: Lab, display_port: int) -> list[Candidate]:
    tls_port, ca_dir = tls_display(lab)
    candidates = [Candidate("direct TCP", None, Path("direct", "tcp", display_port))]
    for loop in ("uvloop", "asyncio"):
        port = free_port()
        relay = lab.start(
            f"relay-{loop}",
            [PYTHON, "-m", "bench.proxy_peers", "relay", str(port), str(display_port), "--loop", loop],
        )
        candidates.append(Candidate(f"asyncio relay ({loop})", relay.pid, Path(f"relay-{loop}", "tcp", port)))

    dashboards: dict[str, Dashboard] = {}
    for impl in ("ours", "websockets-sansio", "websockets", "wsproto"):
        port, gateway_port = free_port(), free_port()
        workdir = lab.dir / f"dashboard-{impl}"
        workdir.mkdir()
        process = lab.start(
            f"dashboard-{impl}",
            [
                PYTHON, "-m", "bench.proxy_server", "--dir", str(workdir), "--port", str(port),
                "--gateway-port", str(gateway_port), "--display-port", str(display_port), "--ws", impl,
                "--display-tls-port", str(tls_port), "--ca-dir", str(ca_dir),
            ],
        )  # fmt: skip
        dashboards[impl] = Dashboard(process, port, gateway_port)

    ours = dashboards["ours"]
    candidates.append(
        Candidate(
            "CONNECT gateway (dashboard)",
            ours.process.pid,
            ours.gateway("gateway", display_port),
            refresh=lambda: ours.gateway("gateway", display_port),
        )
    )
    candidates.append(
        Candidate(
            "WS bridge, TLS to the display (dashboard)",
            ours.process.pid,
            ours.websocket("ours-tls", tls=True),
            refresh=lambda: ours.websocket("ours-tls", tls=True),
        )
    )
    labels = {
        "ours": "WS bridge (dashboard)",
        "websockets-sansio": "WS bridge, stock uvicorn websockets-sansio",
        "websockets": "WS bridge, stock uvicorn websockets (legacy)",
        "wsproto": "WS bridge, stock uvicorn wsproto",
    }
    for impl, dashboard in dashboards.items():
        candidates.append(
            Candidate(
                labels[impl],
                dashboard.process.pid,
                dashboard.websocket(impl),
                refresh=lambda d=dashboard, i=impl: d.websocket(i),
            )
        )

    tokens = lab.dir / "websockify-tokens"
    tokens.write_text(f"bench: 127.0.0.1:{display_port}\n")
    port = free_port()
    websockify = lab.start(
        "websockify",
        [
            str(FsPath(PYTHON).parent / "websockify"), "--token-plugin", "TokenFile",
            "--token-source", str(tokens), f"127.0.0.1:{port}",
        ],
        ready_line=None,
        port=port,
    )  # fmt: skip
    candidates.append(
        Candidate(
            "websockify 0.13 (TokenFile, numpy)",
            websockify.pid,
            Path("websockify", "ws", port, ws_path="/?token=bench"),
        )
    )
    return candidates


# --- measuring ---------------------------------------------------------------------------------


def measure_throughput(candidates: list[Candidate], rounds: int, total: int) -> None:
    for round_number in range(rounds):
        for c in candidates:
            pipe = start_stream(c.fresh())
            # Only the timed transfer is counted: not the handshake, not the warm-up.
            before = cpu_seconds(c.pid) if c.pid else 0.0
            started = time.perf_counter()
            got = pipe.receive(total)
            seconds = time.perf_counter() - started
            after = cpu_seconds(c.pid) if c.pid else 0.0
            pipe.close()
            c.mbps.append(got / seconds / 1e6)
            if c.pid:
                c.cpu_per_gib.append((after - before) / (got / GIB))
            print(f"  round {round_number + 1}/{rounds} {c.name:<46} {c.mbps[-1]:7.0f} MB/s", flush=True)


def measure_latency(candidates: list[Candidate], count: int) -> None:
    for c in candidates:
        c.rtt = round_trips(c.fresh(), count)


# websockify's parent select()s over two descriptors per forked child (multiprocessing's
# sentinels) and fails past about 500 connections (FD_SETSIZE is 1024): measured at 400.
WEBSOCKIFY_IDLE_MAX = 400


def measure_idle(c: Candidate, count: int) -> None:
    assert c.pid is not None
    time.sleep(0.5)
    rss_before, pss_before = memory_kib(c.pid)
    pipes = open_idle(c.fresh(), count)
    time.sleep(2.0)
    rss_after, pss_after = memory_kib(c.pid)
    for pipe in pipes:
        pipe.close()
    c.idle_rss_kib = (rss_after - rss_before) / count
    c.idle_pss_kib = (pss_after - pss_before) / count
    print(f"  {c.name:<46} {c.idle_rss_kib:7.1f} KiB RSS/connection", flush=True)
    time.sleep(1.0)


# --- report ------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def report(candidates: list[Candidate], args: argparse.Namespace, notes: list[str], loads: list[str]) -> str:
    by_name = {c.name: c for c in candidates}
    lines = [
        f"# Console proxy benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}",
        "",
        f"Host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}, uvicorn {version('uvicorn')}, "
        f"websockets {version('websockets')}, uvloop {version('uvloop')}, "
        f"websockify {version('websockify')}, numpy {version('numpy')}.",
        f"Load average at start / end: {loads[0]} / {loads[-1]}. "
        f"Throughput: median of {args.rounds} interleaved rounds of {args.gib} GiB each after a 64 MiB "
        f"warm-up; latency: {args.rtt} round trips of 64 B; idle: {args.idle} connections.",
        "",
        "| path | MB/s | CPU-s/GiB | RTT p50 µs | RTT p99 µs | idle KiB/conn (RSS) | idle KiB/conn (PSS) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in candidates:
        lines.append(
            f"| {c.name} | {fmt(median(c.mbps), '.0f')} | {fmt(median(c.cpu_per_gib), '.3f')} "
            f"| {fmt(percentile(c.rtt, 0.5), '.0f')} | {fmt(percentile(c.rtt, 0.99), '.0f')} "
            f"| {fmt(c.idle_rss_kib, '.1f')} | {fmt(c.idle_pss_kib, '.1f')} |"
        )
    ours = by_name["WS bridge (dashboard)"]
    websockify = by_name["websockify 0.13 (TokenFile, numpy)"]
    relay = by_name["asyncio relay (uvloop)"]
    gateway = by_name["CONNECT gateway (dashboard)"]
    tls_bridge = by_name["WS bridge, TLS to the display (dashboard)"]
    direct = by_name["direct TCP"]

    def ratio(a: Candidate, b: Candidate) -> float:
        return (median(a.mbps) or 0.0) / (median(b.mbps) or 1.0)

    checks = [
        ("WS bridge throughput ≥ 1.0x websockify", ratio(ours, websockify), ratio(ours, websockify) >= 1.0),
        (
            "WS bridge throughput ≥ 0.9x plain asyncio relay (uvloop)",
            ratio(ours, relay),
            ratio(ours, relay) >= 0.9,
        ),
        (
            "WS bridge CPU-s/GiB ≤ websockify's",
            (median(ours.cpu_per_gib) or 0) / (median(websockify.cpu_per_gib) or 1),
            (median(ours.cpu_per_gib) or 0) <= (median(websockify.cpu_per_gib) or 0),
        ),
        (
            "≤ 50 kB memory per idle console (1,000 open), RSS",
            (ours.idle_rss_kib or 0) * 1024 / 1000,
            ours.idle_rss_kib is not None and ours.idle_rss_kib * 1024 <= 50_000,
        ),
        (
            "CONNECT gateway throughput ≥ 0.9x plain asyncio relay (uvloop)",
            ratio(gateway, relay),
            ratio(gateway, relay) >= 0.9,
        ),
        (
            "WS bridge with TLS to the display ≥ 1.0x websockify (plain)",
            ratio(tls_bridge, websockify),
            ratio(tls_bridge, websockify) >= 1.0,
        ),
        (
            "CONNECT gateway (splice) ≥ 0.8x direct TCP",
            ratio(gateway, direct),
            ratio(gateway, direct) >= 0.8,
        ),
    ]
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for label, value, met in checks:
        unit = " kB" if "memory" in label else "x"
        lines.append(f"| {label} | {value:.2f}{unit} | {'yes' if met else 'NO'} |")
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def lab_dir() -> Iterator[FsPath]:
    path = FsPath(tempfile.mkdtemp(prefix="kvmvdi-bench-proxy-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gib", type=float, default=1.0, help="GiB per throughput sample")
    parser.add_argument("--rtt", type=int, default=3000, help="round trips per path")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for the memory figure")
    parser.add_argument("--quick", action="store_true", help="a short run (fewer rounds and bytes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.gib, args.rtt = 2, 0.25, 500
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 4 * args.idle + 200:
        raise SystemExit(f"the open-file limit ({hard}) is too low for {args.idle} idle connections")
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    with lab_dir() as directory:
        lab = Lab(directory)
        try:
            display_port = free_port()
            lab.start("display", [PYTHON, "-m", "bench.proxy_peers", "display", str(display_port)])
            candidates = build(lab, display_port)
            notes = []
            ours = next(c for c in candidates if c.name == "WS bridge (dashboard)")
            probe = ours.fresh().open()
            probe.close()
            extensions = ours.path.negotiated_extensions
            notes.append(
                "permessage-deflate on the console websocket: "
                + (
                    "off (offered by the client, declined by the dashboard)"
                    if not extensions
                    else f"ON: {extensions}"
                )
            )
            print("throughput", flush=True)
            measure_throughput(candidates, args.rounds, int(args.gib * GIB))
            print("latency", flush=True)
            measure_latency(candidates, args.rtt)
            print("idle connections", flush=True)
            for c in candidates:
                if c.name in (
                    "WS bridge (dashboard)",
                    "CONNECT gateway (dashboard)",
                    "asyncio relay (uvloop)",
                    "websockify 0.13 (TokenFile, numpy)",
                ):
                    count = args.idle
                    if c.name.startswith("websockify") and count > WEBSOCKIFY_IDLE_MAX:
                        count = WEBSOCKIFY_IDLE_MAX
                        notes.append(
                            f"{c.name}: idle figure at {count} connections; it cannot hold 1,000 (its parent "
                            "select()s over two descriptors per forked child and fails past ~500)."
                        )
                    try:
                        measure_idle(c, count)
                    except OSError as exc:
                        notes.append(f"{c.name}: could not hold {args.idle} idle connections ({exc}).")
                        print(f"  {c.name}: failed: {exc}", flush=True)
        finally:
            lab.stop()
    loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    text = report(candidates, args, notes, loads)
    print()
    print(text)
    print(f"saved {save('proxy', text).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
