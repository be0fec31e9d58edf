"""Image versions benchmark: publish a new version of a 50-child initial and roll its idle children
onto it, on the real harness hypervisor (measured, not asserted).

    .venv/bin/python -m bench.images [--count 50] [--data-mib 512] [--domain-type auto|kvm|qemu]

The source disk holds the "banner" boot sector plus ``--data-mib`` MiB written into it
(what ``qemu-img convert`` has to copy); the children are 64 MiB guests that keep
running. Measured: publishing v2; rolling the 50 stopped children onto it (their
overlays recreated in one command); rolling the 50 running children back onto v1
(forced off, overlays recreated, started again), until every one runs again.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time

from app.settings import VmSettings
from app.vms.records import children_of, get_vm
from bench.report import report
from bench.vdi import StopWatch
from bench.vdi_world import bench_world
from tests.vms.world import VmWorld


async def timed_operation(world: VmWorld, op_id: int) -> tuple[float, str]:
    started = time.monotonic()
    operation = await world.service.operations.wait(op_id)
    return time.monotonic() - started, operation.state if not operation.error else operation.error[:120]


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    count: int = args.count
    rows: list[tuple[str, str]] = []
    vms = {"power_concurrency": args.concurrency, "domain_type": args.domain_type}
    async with bench_world(vms=vms) as bench:
        world, h0, host = bench.world, bench.h0, bench.host
        service = world.service
        domain_type = args.domain_type if args.domain_type != "auto" else host.virt_type
        rows.append(("hypervisor offers / domains use", f"{host.virt_type} / {domain_type}"))
        created = await service.create(
            {"name": "gold", "kind": "source", "hypervisor_id": h0.id, "memory_mib": 64, "disk_size_gib": 4}
        )
        source = await get_vm(world.db, created.vm_ids[0])
        assert source is not None
        world.install_guest(h0, source.disk_path, "banner")
        initial = await service.create_initial({"name": "init", "source_id": source.id})
        assert initial.operation_id is not None
        await service.operations.wait(initial.operation_id)
        initial_id = initial.vm_ids[0]
        vdi = await service.create_vdi({"initial_id": initial_id, "prefix": "desk", "count": count})
        assert vdi.operation_id is not None
        await service.operations.wait(vdi.operation_id)
        names = [child.name for child in await children_of(world.db, initial_id)]

        # The admin updated the golden image: data the new version has to carry (the boot-sector
        # guest's disk is grown to hold it first).
        for command in (
            ["qemu-img", "resize", "-q", source.disk_path, f"{args.data_mib + 2}M"],
            ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x42 1M {args.data_mib}M", source.disk_path],
        ):
            await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)
        op_id = await service.images.publish(initial_id, origin="source")
        seconds, outcome = await timed_operation(world, op_id)
        rate = args.data_mib / seconds if seconds else 0.0
        rows.append(
            (f"publish v2 ({args.data_mib} MiB of data)", f"{seconds:.2f} s ({outcome}, {rate:.0f} MiB/s)")
        )

        started = time.monotonic()
        op_id = await service.images.rollout(initial_id)
        _, outcome = await timed_operation(world, op_id)
        rows.append(
            (f"roll {count} stopped idle children onto v2", f"{time.monotonic() - started:.2f} s ({outcome})")
        )

        # All of them running (users gone home, desktops kept ready), then a roll back and out.
        running = StopWatch(world, names, "resumed")
        await service.operations.wait(await service.mass_power(initial_id, "start"))
        await running.wait()
        await world.settle()
        started = time.monotonic()
        await service.images.roll_back(initial_id)
        rows.append(("roll back (v1 the target again)", f"{(time.monotonic() - started) * 1000:.0f} ms"))
        again = StopWatch(world, names, "resumed")
        started = time.monotonic()
        op_id = await service.images.rollout(initial_id)
        seconds, outcome = await timed_operation(world, op_id)
        rows.append(
            (f"roll {count} running idle children onto v1", f"{time.monotonic() - started:.2f} s ({outcome})")
        )
        rows.append((f"  ... until all {count} run again", f"{await again.wait():.2f} s"))
        after = await service.images.state(initial_id)
        rows.append(("children on the target afterwards", f"{after.on_target} of {len(after.children)}"))
        await service.operations.wait(await service.mass_power(initial_id, "poweroff"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--domain-type", choices=("auto", "kvm", "qemu"), default="auto")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="VM starts at once (default: the setting's)"
    )
    args = parser.parse_args()
    if args.concurrency is None:
        args.concurrency = VmSettings().power_concurrency
    rows = asyncio.run(run(args))
    report("images", rows, 30)


if __name__ == "__main__":
    main()
