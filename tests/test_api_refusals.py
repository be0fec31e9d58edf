"""What the admin cannot do because of the hypervisor's state is a refusal naming the cause
(409), never a server error: a missing ISO directory, a VM whose domain was removed elsewhere."""

from __future__ import annotations

from pathlib import Path

from app.clock import utcnow
from app.db.schema import hypervisors
from tests.broker.records import add_vm
from tests.dashboard import RunningDashboard


async def _hypervisor(dashboard: RunningDashboard, root: Path) -> int:
    """A test-driver hypervisor whose directories are the test's own; its ISO directory is missing."""
    for name in ("images", "volatile"):
        (root / name).mkdir()
    services = dashboard.services
    hv: int = await services.db.execute(
        hypervisors.insert().values(
            name="hv1",
            transport="test",
            libvirt_uri="test:///default",
            state="up",
            created_at=utcnow(),
            images_dir=str(root / "images"),
            volatile_dir=str(root / "volatile"),
            iso_dir=str(root / "isos"),
        )
    )
    await services.hypervisors.reload(hv)
    await services.hypervisors.wait_for_state(hv, "up", 30)
    return hv


async def test_a_missing_iso_directory_and_a_removed_domain_are_refused_saying_so(
    dashboard: RunningDashboard, tmp_path: Path
) -> None:
    hv = await _hypervisor(dashboard, tmp_path)
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
