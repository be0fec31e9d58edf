"""Hypervisor layer benchmark: connecting over pinned qemu+ssh, and libvirt event latency.

Measured, not asserted. Starts a real isolated hypervisor (the test harness's h0:
its own libvirtd + sshd), connects the way the dashboard does, starts and destroys a
tiny guest N times, and prints a table:

- connect: asyncssh login with the pinned host key; libvirt ``qemu+ssh`` open
  through the pinned ssh wrapper; a whole session (both, as the registry opens it);
- event latency: a second libvirt connection on h0's local socket stamps each
  lifecycle event as libvirtd emits it; the registry's ``DomainEvent`` listener
  stamps it again (over SSH, through our event loop, queue and dispatch). The two
  connections are independent, so a slightly negative value means ours was first.
  Also from the start/destroy call to the listener, as the application sees it
  (mostly qemu starting or stopping).

    .venv/bin/python -m bench.hyper_events [--events 50] [--connects 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh
import libvirt

from app import db as database
from app.audit import AuditLog
from app.db.schema import hypervisors
from app.hyper import DomainEvent, HypervisorRecord, HypervisorRegistry
from app.hyper.connection import LibvirtConnection
from app.hyper.eventloop import ensure_libvirt_event_loop
from app.hyper.session import open_session
from app.hyper.spice_tls import SpiceTls
from app.hyper.sshkeys import KnownHostsFile, ensure_dashboard_key, host_key_algorithms, pinned_known_hosts
from app.live.hub import LiveHub
from app.settings import Settings
from app.tlsca import DashboardCA
from bench.report import report
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir

Row = tuple[str, str]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(label: str, seconds: list[float]) -> list[Row]:
    ms = [value * 1000 for value in seconds]
    return [
        (f"{label} ({len(ms)}x)", f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms"),
        ("", f"min {min(ms):.1f} ms, mean {statistics.mean(ms):.1f} ms, max {max(ms):.1f} ms"),
    ]


async def measure_connects(
    record: HypervisorRecord, key: Any, known_hosts: KnownHostsFile, count: int
) -> list[Row]:
    assert record.host_key is not None
    ssh_times, libvirt_times, session_times = [], [], []
    uri = record.libvirt_uri_for(key, known_hosts)
    for _ in range(count):
        started = time.perf_counter()
        conn = await asyncssh.connect(
            record.address,
            port=record.ssh_port,
            username=record.ssh_user,
            client_keys=[key.load()],
            known_hosts=pinned_known_hosts(record.host_key),
            server_host_key_algs=host_key_algorithms(record.host_key),
            agent_path=None,
            config=None,
        )
        ssh_times.append(time.perf_counter() - started)
        conn.close()
        await conn.wait_closed()

        connection = LibvirtConnection(uri, "bench", threads=1)
        started = time.perf_counter()
        await connection.open(30)
        libvirt_times.append(time.perf_counter() - started)
        await connection.close()

        started = time.perf_counter()
        session = await open_session(record, key, known_hosts)
        session_times.append(time.perf_counter() - started)
        await session.close()
    return [
        *summary("connect: asyncssh login (pinned key)", ssh_times),
        *summary("connect: libvirt qemu+ssh open", libvirt_times),
        *summary("connect: whole session (both)", session_times),
    ]


async def run(events: int, connects: int) -> list[Row]:
    ensure_libvirt_event_loop()
    rows: list[Row] = []
    run_dir = RunDir()
    host = LibvirtHost(run_dir, "h0")
    await asyncio.to_thread(host.start)
    tmp = Path(tempfile.mkdtemp(prefix="hyper-bench-"))
    db = None
    registry = None
    observer: libvirt.virConnect | None = None
    try:
        key = ensure_dashboard_key(tmp / "ssh")
        host.authorize(key.public_line)
        (host.dir / "iso").mkdir(exist_ok=True)
        record = HypervisorRecord(
            id=0,
            name="h0",
            address=host.ssh_address,
            ssh_port=host.ssh_port,
            ssh_user=host.ssh_user,
            images_dir=str(host.images_dir),
            volatile_dir=str(host.volatile_dir),
            iso_dir=str(host.dir / "iso"),
            host_key=host.host_key_line(),
            host_key_confirmed=True,
        )
        known_hosts = KnownHostsFile(tmp / "ssh")
        entry = record.known_hosts_entry()
        assert entry is not None
        known_hosts.write([entry])
        rows.append(("hypervisor", f"h0, libvirt {host.libvirt_version}, guests on {guests.FAST_VIRT_TYPE}"))
        rows += await measure_connects(record, key, known_hosts, connects)

        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        await asyncio.to_thread(database.upgrade, url)
        db = database.connect_database(url)
        await db.connect()
        values = {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "id"}
        hv_id = int(await db.execute(hypervisors.insert().values(**values)))
        settings = Settings(database_url=url, data_dir=tmp)
        registry = HypervisorRegistry(
            db=db,
            hub=LiveHub(),
            audit=AuditLog(db),
            settings=settings,
            key=key,
            known_hosts=known_hosts,
            spice_tls=SpiceTls(DashboardCA.load_or_create(settings.ca_dir())),
        )
        started = time.perf_counter()
        await registry.start()
        hv = registry.get(hv_id)
        rows.append(("registry start to hypervisor up", f"{(time.perf_counter() - started) * 1000:.1f} ms"))

        name = "bench-tiny"
        base = host.images_dir / "bench-base.qcow2"
        shutil.copyfile(GuestImages(run_dir.sub("guests")).base("banner"), base)
        disk = host.images_dir / "bench.qcow2"
        await hv.create_overlay(str(base), str(disk))
        await hv.define(
            guests.domain_xml(name, disk, virt_type=guests.FAST_VIRT_TYPE, spice_listen="127.0.0.1")
        )

        libvirt_stamps: dict[tuple[str, int], float] = {}
        listener_stamps: dict[tuple[str, int], float] = {}
        wanted = {"started": libvirt.VIR_DOMAIN_EVENT_STARTED, "stopped": libvirt.VIR_DOMAIN_EVENT_STOPPED}
        arrived: dict[tuple[str, int], asyncio.Event] = {}

        def on_raw(_conn: Any, domain: Any, event: int, _detail: int, _opaque: Any) -> None:
            if domain.name() == name and event in wanted.values():
                libvirt_stamps[("raw", len([k for k in libvirt_stamps if k[0] == "raw"]))] = (
                    time.perf_counter()
                )

        def on_event(event: DomainEvent) -> None:
            if event.name == name and event.event in wanted:
                index = len(listener_stamps)
                listener_stamps[("ours", index)] = time.perf_counter()
                arrived.setdefault(("ours", index), asyncio.Event()).set()

        observer = await asyncio.to_thread(libvirt.open, host.local_uri)
        await asyncio.to_thread(
            observer.domainEventRegisterAny, None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_raw, None
        )
        registry.add_domain_listener(on_event)

        call_to_listener: list[float] = []
        for index in range(events):
            waiter = arrived.setdefault(("ours", index), asyncio.Event())
            started = time.perf_counter()
            if index % 2 == 0:
                await hv.start(name)
            else:
                await hv.destroy(name)
            await asyncio.wait_for(waiter.wait(), 30)
            call_to_listener.append(listener_stamps[("ours", index)] - started)
        await asyncio.sleep(0.5)
        transport = [
            listener_stamps[("ours", i)] - libvirt_stamps[("raw", i)]
            for i in range(events)
            if ("raw", i) in libvirt_stamps
        ]
        rows += summary("event: libvirtd emits -> DomainEvent listener", transport)
        rows += summary("event: start/destroy call -> DomainEvent listener", call_to_listener)
        if await hv.domain_state(name) == "running":
            await hv.destroy(name)
        await hv.undefine(name)
        await hv.remove_file(str(disk))
        await hv.remove_file(str(base))
    finally:
        if observer is not None:
            await asyncio.to_thread(observer.close)
        if registry is not None:
            await registry.stop()
        if db is not None:
            await db.disconnect()
        await asyncio.to_thread(host.stop)
        run_dir.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50, help="lifecycle events (start/destroy alternate)")
    parser.add_argument("--connects", type=int, default=10, help="connections of each kind")
    args = parser.parse_args()
    rows = asyncio.run(run(args.events, args.connects))
    report("hyper-events", rows, 40)


if __name__ == "__main__":
    main()
