"""VM table benchmark: the VM page of a 1,000-VM fleet in headless Chromium.

A real dashboard (SQLite) holds 1,000 VM rows of rows-only hypervisors (tests/vms/fleet.py:
four hosts, each with a golden image, an initial machine and its VDI desktops in a pool,
plus simple VMs; a fifth of the desktops held by users). For each way of showing the
table it measures, from the browser's own clock:

* time to interactive: navigation start until the page's scripts are set up and the main
  thread has been free for 500 ms (the end of the last long task, if later), with the
  response's arrival and DOMContentLoaded for reference;
* a burst of live updates: every desktop changes state, one ``vm`` message each, published
  as fast as the dashboard can (1,000 messages): the frame times while they arrive and are
  drawn (p50, p95, worst), long tasks, how long until every row in view shows its new
  state, and how many row requests the page made for it.

Prints the table with the load average and saves it under bench/results/. Asserts nothing.

    .venv/bin/python -m bench.vm_table [--vms 1000] [--bursts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from bench.report import host_line, measure_table, save
from tests.dashboard import RunningDashboard, make_settings, start_dashboard
from tests.services.browser import BrowserFactory
from tests.services.rundir import RunDir
from tests.vms.fleet import Fleet, build_fleet, set_states

# Installed before any page script: long tasks, and when the page's own scripts were set up.
PROBE = """
window.__long = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__long.push([entry.startTime, entry.duration]);
}).observe({type: 'longtask', buffered: true});
document.addEventListener('DOMContentLoaded', () => {
  // Our scripts run their own DOMContentLoaded handlers first (registered earlier): this one is last.
  setTimeout(() => { window.__ready = performance.now(); }, 0);
});
"""

# Resolves with the time to interactive once the main thread was free for `quiet` ms.
INTERACTIVE = """
const done = arguments[arguments.length - 1];
const quiet = arguments[0];
function check() {
  const now = performance.now();
  const lastLong = window.__long.reduce((end, [start, duration]) => Math.max(end, start + duration), 0);
  if (window.__ready !== undefined && now - Math.max(lastLong, window.__ready) >= quiet) {
    const nav = performance.getEntriesByType('navigation')[0];
    done({
      interactive: Math.max(window.__ready, lastLong),
      response: nav.responseEnd,
      dcl: nav.domContentLoadedEventEnd,
      rows: document.querySelectorAll('#vm-table tr.vm-row').length,
      nodes: document.getElementsByTagName('*').length,
      longTasks: window.__long.length,
    });
  } else {
    setTimeout(check, 50);
  }
}
check();
"""

# Frames from now until the rows in view all show `label` (or 60 s): resolves with the frame times,
# when the first live message of the burst arrived and when the rows in view were all drawn.
WATCH_BURST = """
const done = arguments[arguments.length - 1];
const label = arguments[0];
const frames = [];
const started = performance.now();
const longBefore = window.__long.length;
const rowRequests = () => performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/vms/rows')).length;
const requestsBefore = rowRequests();
let first = null;
let messages = 0;
window.Live.on('vm', () => { messages += 1; if (first === null) first = performance.now(); });
let last = started;
function inView() {
  return [...document.querySelectorAll('#vm-table tr.vm-row[data-kind="vdi"]')].filter((row) => {
    const box = row.getBoundingClientRect();
    return box.bottom > 0 && box.top < window.innerHeight;
  });
}
function frame(now) {
  frames.push(now - last);
  last = now;
  const rows = inView();
  const badge = (row) => row.querySelector('[data-state-badge]').textContent.trim();
  const shown = first !== null && rows.length > 0 && rows.every((row) => badge(row) === label);
  if (shown || now - started > 60000) {
    const longs = window.__long.slice(longBefore).filter(([start]) => start >= started);
    done({frames, drawnAfter: shown ? now - first : null, messages, longTasks: longs.length,
          longTotal: longs.reduce((sum, [, duration]) => sum + duration, 0),
          rowRequests: rowRequests() - requestsBefore, inView: rows.length, timedOut: !shown});
    return;
  }
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
"""


@dataclass
class Loaded:
    interactive: float
    response: float
    dcl: float
    rows: int
    nodes: int
    long_tasks: int


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def set_view(dashboard: RunningDashboard, cookies: dict[str, str], csrf: str, **view: Any) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, cookies=cookies, timeout=60) as http:
        answer = await http.patch("/api/v1/admin/me/vm-table", json=view, headers={"X-CSRF-Token": csrf})
        answer.raise_for_status()


def load_page(driver: WebDriver, url: str) -> Loaded:
    driver.get(url)
    driver.set_script_timeout(120)
    result: dict[str, Any] = driver.execute_async_script(INTERACTIVE, 500)
    return Loaded(
        interactive=float(result["interactive"]),
        response=float(result["response"]),
        dcl=float(result["dcl"]),
        rows=int(result["rows"]),
        nodes=int(result["nodes"]),
        long_tasks=int(result["longTasks"]),
    )


async def burst(dashboard: RunningDashboard, driver: WebDriver, fleet: Fleet, state: str) -> dict[str, Any]:
    """Every desktop to ``state`` with one live message each, while the browser watches."""
    label = {"shutoff": "shut off"}.get(state, state)
    service = dashboard.services.vms
    assert service is not None
    changed = await set_states(dashboard.services.db, fleet.desktop_ids, state)
    watching = asyncio.create_task(asyncio.to_thread(driver.execute_async_script, WATCH_BURST, label))
    await asyncio.sleep(0.5)  # the watcher is in place (the driver runs one command at a time)
    started = time.perf_counter()
    for vm in changed:
        service.ctx.publish_vm(vm, "state")
    published = time.perf_counter() - started
    result: dict[str, Any] = await watching
    result["published_ms"] = published * 1000
    return result


def fmt(ms: float) -> str:
    return f"{ms:,.0f} ms"


async def run(args: argparse.Namespace) -> str:
    run_dir = RunDir()
    data_dir = Path(tempfile.mkdtemp(prefix="kvmvdi-bench-vmtable-"))
    dashboard = await start_dashboard(make_settings(data_dir, f"sqlite:///{data_dir}/vdi.sqlite3"))
    browser = BrowserFactory(run_dir)
    rows: list[tuple[str, str]] = []
    try:
        fleet = await build_fleet(dashboard.services.db, args.vms, holders=args.vms // 5)
        driver = await asyncio.to_thread(browser.new, width=1400, height=1000)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})

        def log_in() -> tuple[dict[str, str], str]:
            driver.get(dashboard.url + "/login")
            driver.find_element(By.ID, "username").send_keys("admin")
            driver.find_element(By.ID, "password").send_keys(dashboard.admin_password)
            driver.find_element(By.ID, "login-submit").click()
            deadline = time.monotonic() + 60
            while "/login" in driver.current_url and time.monotonic() < deadline:
                time.sleep(0.05)
            csrf = str(
                driver.find_element(By.CSS_SELECTOR, 'meta[name="csrf-token"]').get_attribute("content")
            )
            return {c["name"]: c["value"] for c in driver.get_cookies()}, csrf

        cookies, csrf = await asyncio.to_thread(log_in)
        views: list[tuple[str, dict[str, Any]]] = [
            ("compact, 100 rows a page (default)", {"density": "compact", "per_page": 100}),
            ("compact, 500 rows a page", {"density": "compact", "per_page": 500}),
            ("with screens, 100 rows a page", {"density": "comfortable", "per_page": 100}),
        ]
        for label, view in views:
            await set_view(dashboard, cookies, csrf, **view)
            loads = [
                await asyncio.to_thread(load_page, driver, dashboard.url + "/vms") for _ in range(args.loads)
            ]
            best = min(loads, key=lambda loaded: loaded.interactive)
            median = statistics.median(loaded.interactive for loaded in loads)
            rows.append(
                (
                    f"interactive: {label}",
                    f"{fmt(median)} median of {len(loads)} (best {fmt(best.interactive)}); response "
                    f"{fmt(best.response)}, DOMContentLoaded {fmt(best.dcl)}; {best.rows} rows, "
                    f"{best.nodes:,} elements, {best.long_tasks} long tasks",
                )
            )
        await set_view(dashboard, cookies, csrf, density="compact", per_page=100)
        await asyncio.to_thread(load_page, driver, dashboard.url + "/vms")
        results = []
        for number in range(args.bursts):
            state = "shutoff" if number % 2 == 0 else "running"
            results.append(await burst(dashboard, driver, fleet, state))
        frames = [frame for result in results for frame in result["frames"][1:]]
        drawn = [float(r["drawnAfter"]) for r in results if r["drawnAfter"] is not None] or [float("nan")]
        rows.append(
            (
                f"live burst: {len(fleet.desktop_ids)} state messages x {args.bursts}",
                f"published in {statistics.median(r['published_ms'] for r in results):.0f} ms (median); "
                f"rows in view drawn {fmt(statistics.median(drawn))} after the first message arrived "
                f"(median; worst {fmt(max(drawn))})",
            )
        )
        rows.append(
            (
                "  frame times during the burst",
                f"p50 {percentile(frames, 0.5):.1f} ms, p95 {percentile(frames, 0.95):.1f} ms, "
                f"worst {max(frames):.0f} ms over {len(frames)} frames",
            )
        )
        rows.append(
            (
                "  main thread during the burst",
                f"{sum(r['longTasks'] for r in results)} long tasks, "
                f"{sum(r['longTotal'] for r in results):.0f} ms in all; "
                f"{sum(r['rowRequests'] for r in results)} row requests "
                f"for {results[0]['inView']} rows in view"
                + ("; TIMED OUT" if any(r["timedOut"] for r in results) else ""),
            )
        )
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=dashboard.url, cookies=cookies, timeout=60) as http:
            for page in range(1, 11):
                (await http.get(f"/vms/table?page={page}")).raise_for_status()
        rows.append(("server: /vms/table, one page of 100", fmt((time.perf_counter() - started) * 100)))
    finally:
        await asyncio.to_thread(browser.close)
        await dashboard.stop()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        "# VM table benchmark",
        "",
        f"{args.vms} VM rows (rows-only hypervisors, SQLite), headless Chromium 1400x1000. "
        f"Command: python -m bench.vm_table --vms {args.vms} --bursts {args.bursts} --loads {args.loads}.",
        host_line(),
        f"Load average when the figures were taken: {load}.",
        "",
        "```",
        measure_table(rows, 60),
        "```",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.vm_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--loads", type=int, default=3, help="page loads per way of showing the table")
    args = parser.parse_args(argv)
    text = asyncio.run(run(args))
    print(text)
    print(f"saved {save('vm_table', text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
