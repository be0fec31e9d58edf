"""Printing and keeping benchmark results: every benchmark saves what it printed under bench/results/."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def host_line() -> str:
    """What the figures were measured on."""
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"Host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}; load average at the end {load}."
    )


def measure_table(rows: list[tuple[str, str]], value_width: int = 40) -> str:
    """Two columns, measure and value, as plain text."""
    width = max(len(name) for name, _ in rows)
    lines = [f"{'measure'.ljust(width)}  value", f"{'-' * width}  {'-' * value_width}"]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def save(name: str, text: str) -> Path:
    """Write ``text`` to bench/results/<name>-<timestamp>.md (whole or not at all); the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.rename(target)
    return target


def report(name: str, rows: list[tuple[str, str]], value_width: int = 40) -> Path:
    """Print the host line and the table, and save them as bench/results/<name>-<timestamp>.md."""
    text = "\n".join([host_line(), "", measure_table(rows, value_width)])
    print(text)
    saved = save(name, text + "\n")
    print(f"saved {saved.relative_to(RESULTS.parent.parent)}")
    return saved
