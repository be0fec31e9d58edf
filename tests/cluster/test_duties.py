"""Background duties run on exactly one replica, move within seconds when it dies, and an
operation whose replica died ends "interrupted" with its temporary file removed, once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.clients import (
    holders,
    qemu_img_writing,
)
from tests.cluster.lab import ClusterLab, Replica
from tests.cluster.waiting import until
from tests.dashboard import BrowserLikeClient

pytestmark = [pytest.mark.cluster]


async def test_one_replica_holds_the_duties_and_another_takes_over_within_seconds_of_its_death(
    cluster: ClusterLab,
) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        (holder_name,) = await until(lambda: holders(cluster, http), "a duty holder")
        holder = cluster.replica(holder_name)
        holder.kill()
        killed = time.monotonic()
        samples: list[list[str]] = []

        async def taken_over() -> list[str]:
            found = await holders(cluster, http)
            samples.append(found)
            return found

        (successor,) = await until(taken_over, "another replica takes the duties", within=30)
        took = time.monotonic() - killed
    assert successor != holder_name
    # Never two holders at once while it moved.
    assert all(len(found) <= 1 for found in samples)
    # replica_timeout (3 s here) plus a heartbeat or two; generous for a loaded machine.
    assert took < 10, f"the duties moved after {took:.1f} s"


# Every loop of the dashboard that must run once for the cluster, not once per replica.
CLUSTER_DUTIES = {
    "alert-delivery",
    "certificate-watch",
    "free-orphans",
    "guest-agents",
    "interrupt-operations",
    "keep-ready",
    "lease-reaper",
    "pool-schedules",
    "retention-purge",
    "thumbnails",
}


async def test_every_background_duty_runs_on_the_duty_holder_and_on_no_other_replica(
    cluster: ClusterLab,
) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        (holder,) = await until(lambda: holders(cluster, http), "a duty holder")

        async def running(replica: Replica) -> set[str]:
            return set((await http.get(f"{replica.url}/healthz")).json()["running_duties"])

        async def all_running() -> bool:
            return CLUSTER_DUTIES.issubset(await running(cluster.replica(holder)))

        await until(all_running, f"every duty running on {holder}", within=30)
        for replica in cluster.replicas:
            if replica.running and replica.name != holder:
                assert await running(replica) == set(), replica.name


@dataclass(frozen=True)
class HeldCopy:
    """A source VM's disk being copied to a new initial machine, its qemu-img held still."""

    source: dict[str, Any]
    started: list[dict[str, Any]]  # the VMs the copy made
    op_id: int
    disk: Path  # the initial's first image version, once the copy is done
    part: Path  # the temporary file qemu-img writes
    pid: int  # qemu-img's, stopped (SIGSTOP)


async def held_copy(
    cluster: ClusterLab, admin: BrowserLikeClient, source_name: str, initial_name: str, *, megabytes: int
) -> HeldCopy:
    """A source VM with ``megabytes`` of data (the copy then takes long enough to be caught
    writing) and its copy to a new initial machine, held still while writing its temporary file."""
    api = "/api/v1/admin/vms"
    source = await admin.post(
        api,
        json={
            "name": source_name,
            "kind": "source",
            "hypervisor_id": cluster.hypervisor_id,
            "disk_size_gib": 1,
        },
    )
    assert source.status_code == 201, source.text
    source_vm: dict[str, Any] = source.json()["vms"][0]
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {megabytes}M", source_vm["disk_path"]],
        check=True,
        capture_output=True,
    )
    started = await admin.post(f"{api}/initial", json={"name": initial_name, "source_id": source_vm["id"]})
    assert started.status_code == 202, started.text
    op_id = started.json()["operation"]["id"]
    # The copy publishes the initial's first image version.
    disk = Path(source_vm["disk_path"]).with_name(f"{initial_name}.v1.qcow2")
    part = disk.with_name(f"{disk.name}.part-op{op_id}")
    pid = await until(
        lambda: part.exists() and qemu_img_writing(part), "qemu-img writing the temporary file", every=0.005
    )
    os.kill(pid, signal.SIGSTOP)
    return HeldCopy(source_vm, started.json()["vms"], op_id, disk, part, pid)


async def operation_of(admin: BrowserLikeClient, op_id: int) -> dict[str, Any]:
    found: dict[str, Any] = (await admin.get(f"/api/v1/admin/operations/{op_id}")).json()["operation"]
    return found


async def test_a_copy_whose_replica_died_ends_interrupted_with_its_temporary_file_removed(
    cluster: ClusterLab,
) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        (holder,) = await until(lambda: holders(cluster, http), "a duty holder")
    # The copy runs on a replica that does not hold the duties: another one must clean up after it.
    worker: Replica = next(r for r in cluster.replicas if r.name != holder)
    admin = await cluster.admin(worker.url)
    api = "/api/v1/admin/vms"
    copy = await held_copy(cluster, admin, "cl-source", "cl-initial", megabytes=192)
    # Held still mid-copy: the replica dies while its operation is running.
    try:
        assert copy.part.exists()
        worker.kill()
        observer = await cluster.admin(next(r for r in cluster.replicas if r.running).url)

        async def interrupted() -> dict[str, Any] | None:
            operation = await operation_of(observer, copy.op_id)
            return operation if operation["state"] == "interrupted" else None

        operation = await until(interrupted, "the operation ends interrupted", within=30)
        assert f"replica {worker.name}" in operation["message"]
        assert "Temporary file removed" in operation["message"], operation["message"]
        assert not copy.part.exists() and not copy.disk.exists()
        # The VMs it held are free again; the source can be used at once.
        vm = (await observer.get(f"{api}/{copy.source['id']}")).json()["vm"]
        assert vm["operation"] is None
        # The restarted replica finds nothing of its own to interrupt a second time.
        cluster.heal()
        again = await operation_of(observer, copy.op_id)
        assert again["state"] == "interrupted" and again["message"] == operation["message"]
        await observer.aclose()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(copy.pid, signal.SIGKILL)
        await admin.aclose()
        cleanup = await cluster.admin()
        for vm in [*copy.started, copy.source]:
            await delete_vm(cleanup, vm["id"])
        await cleanup.aclose()


async def delete_vm(admin: BrowserLikeClient, vm_id: int) -> None:
    """Delete a VM and its disk as an admin would (confirming what the plan shows)."""
    api = f"/api/v1/admin/vms/{vm_id}"
    plan = (await admin.get(f"{api}/delete-plan?with_children=1&remove_disks=1")).json()["plan"]
    response = await admin.post(
        f"{api}/delete",
        json={
            "with_children": True,
            "remove_disks": True,
            "confirm_vms": plan["vms"],
            "confirm_files": plan["files"],
        },
    )
    assert response.status_code in (200, 202), response.text


async def test_a_replica_that_restarts_leaves_the_operations_of_the_others_running(
    cluster: ClusterLab,
) -> None:
    """A starting replica interrupts only its own leftovers, never what another replica is doing."""
    worker, restarted = cluster.replicas[0], cluster.replicas[2]
    admin = await cluster.admin(worker.url)
    copy = await held_copy(cluster, admin, "cl-source2", "cl-initial2", megabytes=64)
    try:
        restarted.stop()
        restarted.start()
        await asyncio.to_thread(restarted.wait_ready)
        # The other replica's copy goes on (held still, but running) and then finishes.
        operation = await operation_of(admin, copy.op_id)
        assert operation["state"] == "running", operation
        os.kill(copy.pid, signal.SIGCONT)

        async def finished() -> dict[str, Any] | None:
            found = await operation_of(admin, copy.op_id)
            return found if found["state"] not in ("pending", "running") else None

        assert (await until(finished, "the copy ends", within=120))["state"] == "succeeded"
        assert copy.disk.exists() and not copy.part.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(copy.pid, signal.SIGCONT)
        for vm in [*copy.started, copy.source]:
            await delete_vm(admin, vm["id"])
        await admin.aclose()
