"""What the admin cannot do because of the hypervisor's state is a refusal naming the cause
(409), never a server error: a missing ISO directory, a VM whose domain was removed elsewhere."""

from __future__ import annotations

from pathlib import Path

from tests.broker.records import add_connected_hypervisor, add_vm
from tests.dashboard import RunningDashboard


async def test_a_missing_iso_directory_and_a_removed_domain_are_refused_saying_so(
    dashboard: RunningDashboard, tmp_path: Path
) -> None:
    # The hypervisor's directories are the test's own; its ISO directory is missing.
    hv = await add_connected_hypervisor(
        dashboard.services.hypervisors, dashboard.services.db, directories=tmp_path
    )
    admin = await dashboard.admin()

    isos = await admin.get(f"/api/v1/admin/hypervisors/{hv}/isos")
    assert isos.status_code == 409, isos.text
    assert isos.json()["error"] == "iso_dir_missing"
    assert "does not exist on the hypervisor" in isos.json()["message"]
    # A new VM naming an ISO there is refused on its field, as any ISO not on the list is.
    made = await admin.post(
        "/api/v1/admin/vms", json={"name": "iso-vm", "hypervisor_id": hv, "iso_path": "/isos/x.iso"}
    )
    assert made.status_code == 400 and "iso_path" in made.json()["fields"], made.text

    # A VM row whose domain the hypervisor no longer holds (undefined with virsh, say).
    ghost = await add_vm(dashboard.services.db, "ghost-vm", hv, kind="simple")
    for action in ("start", "reset"):
        answer = await admin.post(f"/api/v1/admin/vms/{ghost}/power", json={"action": action})
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == "domain_missing"
        assert "ghost-vm has no domain on hv1" in answer.json()["message"]
