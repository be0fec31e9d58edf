"""Cluster benchmark: three replicas behind HAProxy on a 3-node Galera cluster and Redis.

1. Live event -> browser across replicas: an admin changes a hypervisor on r1; headless
   Chromium tabs whose /live socket is on r1, r2 and r3 stamp the message on arrival
   (``Date.now()`` minus the event's publication time on r1; one host, one clock).
2. Console failover: the replicas carrying an HTML5 console (Chromium, client portal) and a
   remote-viewer session (thin-client launcher, kiosk) are killed with SIGKILL; the time until
   the first SPICE frame on a fresh canvas, and until remote-viewer shows the desktop again
   (Xvfb screenshots, every ~0.5 s).
3. Desktop allocation storm: all requests at once from three replicas' allocation paths on
   Galera (writes spread over the three nodes, and through HAProxy's one writer), against one
   replica on one MariaDB server (bench/cluster_alloc.py): requests/s, p50, p99, transactions
   retried, desktops given twice (must be 0).
4. Aggregate console throughput through HAProxy with one and with two replicas.

Prints the tables, saves them under bench/results/; asserts nothing.

    .venv/bin/python -m bench.cluster [--rounds 3] [--events 100] [--desktops 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import sys
import time
from pathlib import Path

from selenium.webdriver.remote.webdriver import WebDriver

from bench.cluster_alloc import HEADER, prepare, storm
from bench.cluster_stream import throughput
from bench.proxy_lab import Lab
from bench.report import RESULTS, host_line, save
from tests.broker.portal_steps import wait_until
from tests.cluster.consoles import TwoConsoles, close_two_consoles, open_two_consoles
from tests.cluster.desktops import ClusterDesktops
from tests.cluster.lab import ClusterLab
from tests.dashboard import ADMIN_PASSWORD
from tests.services.browser import BrowserFactory
from tests.services.galera import GaleraCluster
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.mariadb import MariaDB
from tests.services.redis import RedisServer
from tests.services.rundir import RunDir
from tests.services.xvfb import Xvfb

LISTEN = """
window.__latencies = [];
Live.on('hypervisor', (data, message) => {
  if (data.event === 'updated') window.__latencies.push(Date.now() - message.at * 1000);
});
return Live.connected;
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def live_latency(cluster: ClusterLab, browser: BrowserFactory, events: int) -> list[str]:
    drivers: list[tuple[str, WebDriver]] = []
    try:
        for replica in cluster.replicas:
            driver = browser.new()
            drivers.append((replica.name, driver))
            driver.get(f"{replica.url}/login")
            driver.find_element("id", "username").send_keys("admin")
            driver.find_element("id", "password").send_keys(ADMIN_PASSWORD)
            driver.find_element("id", "login-submit").click()
            wait_until(driver, lambda d=driver: "/login" not in d.current_url)
            wait_until(driver, lambda d=driver: d.execute_script(LISTEN))
        admin = await cluster.admin(cluster.replicas[0].url)
        hypervisor = f"/api/v1/admin/hypervisors/{cluster.hypervisor_id}"
        for index in range(events):
            response = await admin.http.patch(
                hypervisor, json={"maintenance": index % 2 == 0}, headers={"X-CSRF-Token": admin.csrf or ""}
            )
            response.raise_for_status()
        if events % 2:
            await admin.http.patch(
                hypervisor, json={"maintenance": False}, headers={"X-CSRF-Token": admin.csrf or ""}
            )
        await admin.aclose()
        rows = [
            f"| live event -> browser ({events} admin changes on r1, one tab per replica) "
            "| received | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for name, driver in drivers:
            wait_until(
                driver, lambda d=driver: len(d.execute_script("return window.__latencies")) >= events, 60
            )
            latencies = [float(x) for x in driver.execute_script("return window.__latencies")]
            where = "same replica" if name == cluster.replicas[0].name else "another replica"
            rows.append(
                f"| tab on {name} ({where}) | {len(latencies)} | {statistics.median(latencies):.1f} "
                f"| {percentile(latencies, 0.99):.1f} |"
            )
        return rows
    finally:
        for _, driver in drivers:
            driver.quit()


async def failover(consoles: TwoConsoles, rounds: int) -> list[str]:
    cluster = consoles.cluster
    html5: list[float] = []
    viewer: list[float] = []
    for round_ in range(rounds):
        holders = consoles.holders()
        while len(holders) < 2:
            await asyncio.sleep(0.2)
            holders = consoles.holders()
        first_viewer = consoles.ui.controller.viewer
        killed_ms = time.time() * 1000
        for name in set(holders.values()):
            cluster.replica(name).kill()
        while consoles.browser_state() == "connected":
            await asyncio.sleep(0.02)
        html5.append(await asyncio.to_thread(consoles.first_frame_ms) - killed_ms)
        await consoles.ui.until_async(
            lambda fv=first_viewer: consoles.ui.controller.viewer is not fv, "new viewer"
        )
        await consoles.viewer_shows_banner(f"failover-{round_}.png")
        viewer.append(time.time() * 1000 - killed_ms)
        await asyncio.to_thread(cluster.heal)
    return [
        f"| console failover: replica killed (SIGKILL) -> desktop on screen again, ms ({rounds} rounds) "
        "| median | min | max |",
        "|---|---:|---:|---:|",
        f"| HTML5 console: first SPICE frame on a fresh canvas | {statistics.median(html5):.0f} "
        f"| {min(html5):.0f} | {max(html5):.0f} |",
        f"| remote-viewer (launcher, kiosk): desktop seen on the screen again "
        f"| {statistics.median(viewer):.0f} | {min(viewer):.0f} | {max(viewer):.0f} |",
    ]


def storms(cluster: ClusterLab, run_dir: RunDir, lab: Lab, desktops: int) -> list[str]:
    rows = list(HEADER)
    nodes = [node.url for node in cluster.galera.nodes]
    pool, users = asyncio.run(prepare(nodes[0], desktops, "spread"))
    rows.append(storm(lab, "3 replicas, Galera, writes on all 3 nodes", nodes, nodes[0], pool, users).row())
    pool, users = asyncio.run(prepare(cluster.database_url, desktops, "haproxy"))
    through = [cluster.database_url] * 3
    rows.append(
        storm(lab, "3 replicas, Galera through HAProxy (one writer)", through, nodes[0], pool, users).row()
    )
    single = MariaDB(run_dir, "mariadb-single").start()
    try:
        pool, users = asyncio.run(prepare(single.url, desktops, "single"))
        rows.append(storm(lab, "1 replica, one MariaDB server", [single.url], single.url, pool, users).row())
    finally:
        single.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="failover rounds")
    parser.add_argument("--events", type=int, default=100, help="live events")
    parser.add_argument("--desktops", type=int, default=200, help="desktops (and users) in the storm")
    parser.add_argument("--consoles", type=int, default=8, help="consoles streaming at once")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput measurement time")
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.events, args.desktops, args.seconds = 1, 30, 60, 2.0
    loads = [host_line()]
    run_dir = RunDir()
    services: list[object] = []
    sections: list[list[str]] = []
    lab = Lab(run_dir.path)
    try:
        galera = GaleraCluster(run_dir).start()
        services.append(galera)
        redis = RedisServer(run_dir).start()
        services.append(redis)
        host = LibvirtHost(run_dir, "h0").start()
        services.append(host)
        xvfb = Xvfb(run_dir).start()
        services.append(xvfb)
        browser = BrowserFactory(run_dir)
        cluster = ClusterLab(run_dir, galera=galera, redis=redis, hypervisor=host).start()
        services.append(cluster)
        desktops = ClusterDesktops(cluster, host)
        asyncio.run(desktops.create(GuestImages(run_dir.sub("guests"))))
        try:
            sections.append(asyncio.run(live_latency(cluster, browser, args.events)))
            sections.append(
                asyncio.run(measure_failover(cluster, desktops, browser, xvfb, run_dir.path, args.rounds))
            )
            sections.append(storms(cluster, run_dir, lab, args.desktops))
            sections.append(throughput(cluster, lab, args.consoles, args.seconds))
        finally:
            asyncio.run(desktops.remove())
            browser.close()
    finally:
        lab.stop()
        for service in reversed(services):
            service.stop()  # type: ignore[attr-defined]
        run_dir.cleanup()
    loads.append(host_line())
    text = "\n".join(
        [
            f"# Cluster benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}",
            "",
            f"{loads[0]} At the end: {loads[-1].split('; ')[-1]}",
            f"Command: python -m bench.cluster --rounds {args.rounds} --events {args.events} "
            f"--desktops {args.desktops} --consoles {args.consoles} --seconds {args.seconds:g}.",
            "Three replicas (kvm-vdi serve) behind HAProxy (deploy/haproxy.cfg), a 3-node MariaDB "
            "Galera cluster and Redis on this one machine; desktops are TCG boot-sector guests on a "
            "local hypervisor.",
            *(line for section in sections for line in ["", *section]),
        ]
    )
    print(text)
    print(f"saved {save('cluster', text + chr(10)).relative_to(RESULTS.parent.parent)}")
    return 0


async def measure_failover(
    cluster: ClusterLab,
    desktops: ClusterDesktops,
    browser: BrowserFactory,
    xvfb: Xvfb,
    root: Path,
    rounds: int,
) -> list[str]:
    driver = browser.new()
    shots = root / "shots"
    shots.mkdir(exist_ok=True)
    try:
        consoles = await open_two_consoles(cluster, desktops, driver, xvfb, shots, (0, 1))
        try:
            return await failover(consoles, rounds)
        finally:
            await close_two_consoles(consoles)
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
