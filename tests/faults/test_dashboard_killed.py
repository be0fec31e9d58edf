"""A real ``kvm-vdi serve`` is killed (SIGKILL: no clean-up of its own) during a copy disk and
during a populate. Started again, it shows each operation "interrupted" with the reason, the
temporary files are gone once the hypervisor answers, and the VM table agrees with libvirt."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app import db as database
from app.auth.accounts import create_local_user
from app.hyper.sshkeys import fingerprint
from app.vms.operations import ACTIVE_STATES
from tests.dashboard import BrowserLikeClient
from tests.faults.conftest import FAST_FENCING, libvirt_states, partial_files
from tests.served import ServedDashboard
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.ports import allocate_port, release_port
from tests.services.rundir import RunDir
from tests.vms.world import clean_host, prepare_iso_dir
from tests.waiting import eventually

pytestmark = pytest.mark.kvm

ADMIN_PASSWORD = "killed-admin-password-1"
API = "/api/v1/admin"


@dataclass
class Served:
    """``kvm-vdi serve`` processes, one after the other, on one database and data directory."""

    run_dir: RunDir
    workdir: Path
    database_url: str
    env: dict[str, str]
    current: ServedDashboard | None = None
    admin: BrowserLikeClient | None = None

    async def start(self) -> BrowserLikeClient:
        served = ServedDashboard(self.run_dir, self.workdir, self.database_url, env=self.env)
        await asyncio.to_thread(served.start)
        self.current = served
        self.admin = BrowserLikeClient(served.url)
        response = await self.admin.login("admin", ADMIN_PASSWORD)
        assert response.status_code == 303, response.text
        return self.admin

    async def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would end it."""
        assert self.current is not None and self.admin is not None
        os.kill(self.current.pid, signal.SIGKILL)
        await asyncio.to_thread(self.current.stop)
        await self.admin.aclose()
        self.current = self.admin = None

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.admin is not None
        if method == "GET":
            response = await self.admin.get(API + path)
        else:
            response = await self.admin.post(API + path, json=kwargs)
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    async def until(self, path: str, ready: Callable[[Any], bool]) -> Any:
        async def answered() -> tuple[Any] | None:
            answer = await self.api("GET", path)
            return (answer,) if ready(answer) else None

        (answer,) = await eventually(answered, f"GET {path} answering as awaited")
        return answer

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.aclose()
        if self.current is not None:
            await asyncio.to_thread(self.current.stop)


@pytest.fixture
async def served(
    run_dir: RunDir, tmp_path: Path, database_url: str, hypervisor_host: LibvirtHost
) -> AsyncIterator[Served]:
    await asyncio.to_thread(database.upgrade, database_url)
    db = database.connect_database(database_url)
    await db.connect()
    await create_local_user(db, "admin", ADMIN_PASSWORD, role="admin")
    await db.disconnect()
    gateway = allocate_port()
    env = {f"KVMVDI_HYPERVISORS__{key.upper()}": str(value) for key, value in FAST_FENCING.items()}
    env["KVMVDI_GATEWAY__PORT"] = str(gateway)
    # The session's dashboard CA: the hypervisor keeps the SPICE certificate other tests' dashboards issued.
    env["KVMVDI_CONSOLE__CA_DIR"] = os.environ["KVMVDI_CONSOLE__CA_DIR"]
    dashboards = Served(run_dir, tmp_path / "serve", database_url, env)
    yield dashboards
    await dashboards.stop()
    release_port(gateway)
    await asyncio.to_thread(clean_host, hypervisor_host, "killed-")


async def register(served: Served, host: LibvirtHost) -> int:
    """h0 added through the API of the served dashboard (its key authorized, the host key pinned)."""
    public_key = (served.workdir / "var" / "ssh" / "id_ed25519.pub").read_text()
    host.authorize(public_key)
    created = await served.api(
        "POST",
        "/hypervisors",
        name="h0",
        transport="ssh",
        address=host.ssh_address,
        ssh_port=host.ssh_port,
        ssh_user=host.ssh_user,
        images_dir=str(host.images_dir),
        volatile_dir=str(host.volatile_dir),
        iso_dir=str(prepare_iso_dir(host)),
    )
    hv_id = int(created["id"])
    await served.api("POST", f"/hypervisors/{hv_id}/host-key", fingerprint=fingerprint(host.host_key_line()))
    await served.until(f"/hypervisors/{hv_id}", lambda hv: hv["state"] == "up")
    return hv_id


async def killed_during(served: Served, op_id: int, reached: str) -> None:
    await served.until(
        f"/operations/{op_id}", lambda answer: answer["operation"]["message"].startswith(reached)
    )
    await served.kill()


def finished(answer: Any) -> bool:
    return answer["operation"]["state"] not in ACTIVE_STATES


async def interrupted(served: Served, op_id: int) -> dict[str, Any]:
    answer = await served.until(f"/operations/{op_id}", finished)
    operation: dict[str, Any] = answer["operation"]
    assert operation["state"] == "interrupted", operation
    assert "the dashboard stopped during this operation and did not resume it" in operation["message"]
    return operation


async def vm_states(served: Served) -> dict[str, str]:
    return {vm["name"]: vm["state"] for vm in (await served.api("GET", "/vms"))["vms"]}


async def agree_with_libvirt(served: Served, host: LibvirtHost) -> dict[str, str]:
    async def agreed() -> tuple[dict[str, str]] | None:
        rows = await vm_states(served)
        # In a tuple: no VMs on either side is an agreement too.
        return (rows,) if rows == await asyncio.to_thread(libvirt_states, host, "killed-") else None

    (states,) = await eventually(agreed, "the VM rows saying what libvirt says", interval=0.2)
    return states


async def test_the_dashboard_killed_during_a_copy_disk(
    served: Served, hypervisor_host: LibvirtHost, copy_source: Path
) -> None:
    await served.start()
    hv_id = await register(served, hypervisor_host)
    source = (await served.api("POST", "/vms", name="killed-src", kind="source", hypervisor_id=hv_id))["vms"][
        0
    ]
    disk = Path(source["disk_path"])
    disk.unlink()
    os.link(copy_source, disk)
    started = await served.api("POST", "/vms/initial", name="killed-init", source_id=source["id"])
    op_id = started["operation"]["id"]
    await killed_during(served, op_id, "Copying: ")

    await served.start()
    await interrupted(served, op_id)
    removed = "Temporary file removed"
    await served.until(f"/operations/{op_id}", lambda answer: removed in answer["operation"]["message"])
    assert partial_files(hypervisor_host, "killed-") == []
    assert not (hypervisor_host.images_dir / "killed-init.qcow2").exists(), "no half-copied disk"
    assert await agree_with_libvirt(served, hypervisor_host) == {
        "killed-src": "shutoff",
        "killed-init": "shutoff",
    }


async def test_the_dashboard_killed_during_a_populate(
    served: Served, hypervisor_host: LibvirtHost, guest_images: GuestImages
) -> None:
    await served.start()
    hv_id = await register(served, hypervisor_host)
    source = (await served.api("POST", "/vms", name="killed-gold", kind="source", hypervisor_id=hv_id))[
        "vms"
    ][0]
    guest_images.overlay("banner", Path(source["disk_path"]))
    copy = await served.api("POST", "/vms/initial", name="killed-init", source_id=source["id"])
    initial = copy["vms"][0]
    await served.until(
        f"/operations/{copy['operation']['id']}", lambda a: a["operation"]["state"] == "succeeded"
    )
    vdi = await served.api("POST", f"/vms/{initial['id']}/vdi", prefix="killed-desk", count=10)
    await served.until(
        f"/operations/{vdi['operation']['id']}", lambda a: a["operation"]["state"] == "succeeded"
    )
    populate = await served.api("POST", f"/vms/{initial['id']}/populate")
    op_id = populate["operation"]["id"]
    # The first boots are being set up, paused until all are up (ten take long enough to be caught:
    # the stored progress message changes at most once a second).
    await killed_during(served, op_id, "Set up ")

    await served.start()
    await interrupted(served, op_id)
    rows = await agree_with_libvirt(served, hypervisor_host)
    assert partial_files(hypervisor_host, "killed-") == []
    children = [vm for vm in (await served.api("GET", "/vms"))["vms"] if vm["name"].startswith("killed-desk")]
    assert len(children) == 10 and all(vm["maintenance"] for vm in children), children
    # Free to act on again: nothing holds them, and populating again brings them all up.
    assert all(vm.get("operation") is None for vm in children), children
    again = await served.api("POST", f"/vms/{initial['id']}/populate")
    done = await served.until(f"/operations/{again['operation']['id']}", finished)
    assert done["operation"]["state"] == "succeeded", done
    assert rows  # the table agreed with libvirt before the second run
