"""The soak's figures: samples over time, the summary with its targets, markdown, plot and raw JSON.

Written side by side as ``<stem>.md``, ``<stem>.png`` and ``<stem>.json`` (each whole or not at
all: a temporary name, renamed at the end).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt

# Memory after warm-up may grow by less than this (last minute against the first one after warm-up).
GROWTH_LIMIT = 0.05
WINDOW = 60.0


@dataclass
class Sample:
    """One look at the dashboard process, ``at`` seconds into the soak."""

    at: float
    rss_kib: int
    fds: int
    cpu_percent: float
    lag_p99_ms: float
    lag_max_ms: float
    # The same p99 in an idle process's event loop: the machine's share of the lag.
    control_lag_p99_ms: float
    load1: float


@dataclass
class Probe:
    """Console round trips (64 B through the websocket bridge) ``at`` seconds into the soak."""

    at: float
    p50_us: float
    p99_us: float
    count: int


@dataclass
class Soak:
    command: str
    host: str
    settings: dict[str, Any]
    loads: list[str]
    samples: list[Sample] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    control_lag_ms: list[float] = field(default_factory=list)
    clients: dict[str, Any] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    probe_errors: list[str] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def window_median(samples: list[Sample], start: float, end: float) -> float | None:
    values = [s.rss_kib for s in samples if start <= s.at < end]
    return statistics.median(values) if values else None


def growth(soak: Soak) -> tuple[float, float, float] | None:
    """(RSS MiB in the first window after warm-up, in the last window, relative growth)."""
    if not soak.samples:
        return None
    warmup = float(soak.settings["warmup_seconds"])
    end = soak.samples[-1].at
    window = min(WINDOW, max(1.0, (end - warmup) / 3))
    first = window_median(soak.samples, warmup, warmup + window)
    last = window_median(soak.samples, end - window, end + 1)
    if first is None or last is None:
        return None
    return first / 1024, last / 1024, (last - first) / first


def error_count(soak: Soak) -> int:
    clients = int(sum(soak.clients.get("errors", {}).values()))
    return clients + len(soak.server_errors) + len(soak.probe_errors)


def targets(soak: Soak) -> list[tuple[str, str, bool]]:
    grown = growth(soak)
    rows = [("errors (load, probes and the dashboard's log)", str(error_count(soak)), error_count(soak) == 0)]
    if grown is None:
        rows.append(("memory growth after warm-up < 5 %", "no samples after warm-up", False))
    else:
        rows.append(
            (
                "memory growth after warm-up < 5 %",
                f"{grown[2] * 100:+.1f} % ({grown[0]:.1f} → {grown[1]:.1f} MiB)",
                grown[2] < GROWTH_LIMIT,
            )
        )
    return rows


def markdown(soak: Soak) -> str:
    s = soak.settings
    c = soak.clients
    counts = c.get("counts", {})
    first, last = (soak.samples[0], soak.samples[-1]) if soak.samples else (None, None)
    lines = [
        f"# Soak: {s['minutes']} minutes under load on {s['database']}",
        "",
        soak.host,
        f"Load average (1, 5, 15 min) at start / end: {soak.loads[0]} / {soak.loads[-1]}; "
        f"mean 1-minute load over the run {statistics.fmean([x.load1 for x in soak.samples] or [0]):.2f}.",
        f"Command: `{soak.command}`",
        "",
        f"Load: {c.get('consoles', 0)} console websockets through the dashboard's bridge to a stand-in "
        f"display (each with its own console ticket; {s['message']} B echoed every ~{s['every']:g} s), "
        f"{c.get('live_pages', 0)} `/live` admin pages, {c.get('churn_users', 0)} portal users requesting, "
        f"heartbeating and releasing desktops of a {s['desktops']}-desktop pool through the broker API "
        f"(boot-sector guests on the harness's hypervisor h0 over SSH; a reset on return: "
        f"{'yes' if s['reset'] else 'no'}). Warm-up: the first {s['warmup_seconds']:g} s.",
        "",
        "| target | measured | met |",
        "|---|---|:---:|",
    ]
    lines += [f"| {label} | {value} | {'yes' if met else 'NO'} |" for label, value, met in targets(soak)]
    lines += ["", "| measure | start | end |", "|---|---:|---:|"]
    if first and last:
        lines.append(f"| dashboard RSS (MiB) | {first.rss_kib / 1024:.1f} | {last.rss_kib / 1024:.1f} |")
        lines.append(f"| open file descriptors | {first.fds} | {last.fds} |")
    measured = [p for p in soak.probes if p.count]
    if measured:
        p0, p1 = measured[0], measured[-1]
        lines.append(f"| console RTT p50 (µs) | {p0.p50_us:.0f} | {p1.p50_us:.0f} |")
        lines.append(f"| console RTT p99 (µs) | {p0.p99_us:.0f} | {p1.p99_us:.0f} |")
        lines.append(
            f"| console RTT probe (s into the soak, round trips) | {p0.at:.0f}, {p0.count} "
            f"| {p1.at:.0f}, {p1.count} |"
        )
    control = soak.control_lag_ms
    cpu = statistics.fmean([x.cpu_percent for x in soak.samples] or [0])
    lines += [
        "",
        f"Event-loop lag over the run (sampled every {s['lag_interval']:g} s, {len(soak.lag_ms)} samples): "
        f"p50 {percentile(soak.lag_ms, 0.5):.1f} ms, p99 {percentile(soak.lag_ms, 0.99):.1f} ms, "
        f"max {max(soak.lag_ms, default=0):.1f} ms. The same in an idle event loop of a process of its "
        f"own on the same machine (the lag the machine alone causes): p50 {percentile(control, 0.5):.1f} ms, "
        f"p99 {percentile(control, 0.99):.1f} ms, max {max(control, default=0):.1f} ms. "
        f"Dashboard CPU over the run: {cpu:.0f} % of one core.",
        "",
        "Traffic: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".",
    ]
    examples = [*c.get("error_examples", []), *soak.server_errors[:20], *soak.probe_errors]
    if examples:
        lines += ["", "Errors (first ones):", "", *(f"- `{e}`" for e in examples)]
    lines += [
        "",
        "| minute | RSS MiB | fds | dashboard CPU % | lag p99 ms (worst 5 s) | idle loop's (worst 5 s) "
        "| load 1 min |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for minute in range(int((last.at if last else 0) // 60) + 1):
        window = [x for x in soak.samples if minute * 60 <= x.at < (minute + 1) * 60]
        if window:
            w = window[-1]
            lag = max(x.lag_p99_ms for x in window)
            idle = max(x.control_lag_p99_ms for x in window)
            cpu = statistics.fmean(x.cpu_percent for x in window)
            lines.append(
                f"| {minute} | {w.rss_kib / 1024:.1f} | {w.fds} | {cpu:.0f} | {lag:.1f} | {idle:.1f} "
                f"| {w.load1:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(soak: Soak, target: Path) -> None:
    at = [s.at / 60 for s in soak.samples]
    figure, (memory, latency, fds) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    memory.plot(at, [s.rss_kib / 1024 for s in soak.samples], color="tab:blue")
    memory.axvline(soak.settings["warmup_seconds"] / 60, color="grey", linestyle=":", label="end of warm-up")
    memory.set_ylabel("dashboard RSS (MiB)")
    memory.set_ylim(bottom=0)
    memory.legend(loc="lower right")
    latency.plot(at, [s.lag_p99_ms for s in soak.samples], color="tab:orange", label="event-loop lag p99")
    latency.plot(
        at,
        [s.control_lag_p99_ms for s in soak.samples],
        color="tab:grey",
        linewidth=0.8,
        label="lag p99 of an idle loop (the machine)",
    )
    latency.plot(
        [p.at / 60 for p in soak.probes if p.count],
        [p.p99_us / 1000 for p in soak.probes if p.count],
        "o-",
        color="tab:green",
        label="console RTT p99",
    )
    latency.set_ylabel("ms")
    latency.set_ylim(bottom=0)
    latency.legend(loc="upper right")
    fds.plot(at, [s.fds for s in soak.samples], color="tab:purple", label="open file descriptors")
    fds.set_ylabel("descriptors")
    fds.set_ylim(0, max([s.fds for s in soak.samples], default=1) * 1.25)
    load = fds.twinx()
    load.plot(at, [s.load1 for s in soak.samples], color="tab:grey", linewidth=0.8)
    load.set_ylabel("load average (1 min)", color="tab:grey")
    load.set_ylim(bottom=0)
    fds.set_xlabel("minutes into the soak")
    figure.suptitle(f"KVM-VDI soak, {soak.settings['minutes']} min on {soak.settings['database']}")
    figure.tight_layout()
    tmp = target.with_name(target.name + ".tmp")
    figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    tmp.rename(target)


def save(soak: Soak, directory: Path, stem: str) -> list[Path]:
    """The markdown, plot and raw JSON of ``soak`` under ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".md", markdown(soak)), (".json", json.dumps(asdict(soak), indent=1) + "\n")):
        target = directory / f"{stem}{suffix}"
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.rename(target)
        written.append(target)
    plot(soak, directory / f"{stem}.png")
    written.append(directory / f"{stem}.png")
    return written
