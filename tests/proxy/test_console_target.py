"""A console ticket's target is the hypervisor's own address, never a domain's ``listen`` address.

An adopted domain (defined on the hypervisor by someone else) may listen on 127.0.0.1: if the
proxy believed it, it would connect to a port on the dashboard's own loopback. h1 runs in a
network namespace of its own, so its 127.0.0.1 is not the dashboard's.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.clock import utcnow
from app.db.schema import hypervisors, vms
from app.hyper.sshkeys import ensure_dashboard_key
from tests.dashboard import DashboardFactory
from tests.hyper.conftest import row_values, ssh_record
from tests.proxy.conftest import TcpDisplay
from tests.proxy.spice_client import connect_through_gateway
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost

DOMAIN = "adopted-loopback"


async def test_an_adopted_domain_listening_on_loopback_cannot_reach_a_dashboard_local_port(
    dashboard_factory: DashboardFactory,
    second_hypervisor: LibvirtHost,
    guest_images: GuestImages,
    display: TcpDisplay,
    tmp_path: Path,
) -> None:
    h1 = second_hypervisor
    data_dir = tmp_path / "var0"
    key = await asyncio.to_thread(ensure_dashboard_key, data_dir / "ssh")
    h1.authorize(key.public_line)
    # The domain's display listens on h1's loopback at the port a service of the dashboard's
    # machine happens to use (here a stand-in on 127.0.0.1); an adopted domain has a plain
    # SPICE port only, so its hypervisor record allows plain SPICE.
    disk = guest_images.overlay("banner", h1.images_dir / f"{DOMAIN}.qcow2")
    xml = guests.domain_xml(DOMAIN, disk, virt_type=guests.FAST_VIRT_TYPE, spice_password="adopted")
    xml = xml.replace("autoport='yes'", f"autoport='no' port='{display.port}'")
    (tmp_path / "adopted.xml").write_text(xml)
    h1.virsh("define", str(tmp_path / "adopted.xml"))
    h1.virsh("start", DOMAIN)
    try:
        dashboard = await dashboard_factory()
        db = dashboard.services.db
        hv_id = int(
            await db.execute(
                hypervisors.insert().values(**row_values(ssh_record(h1, name="h1-adopt", spice_plain=True)))
            )
        )
        await dashboard.services.hypervisors.reload(hv_id)
        await dashboard.services.hypervisors.wait_for_state(hv_id, "up", timeout=60)
        vm_id = int(
            await db.execute(
                vms.insert().values(
                    name=DOMAIN, hypervisor_id=hv_id, kind="unclassified", created_at=utcnow()
                )
            )
        )
        admin = await dashboard.admin()
        opened = await admin.post(f"/vms/{vm_id}/console", json={}, headers={"Accept": "application/json"})
        assert opened.status_code == 200, opened.text
        ticket = opened.cookies["kvmvdi_console"]
        ticket_row = await dashboard.services.consoles.tickets.redeem(ticket)
        assert ticket_row is not None
        assert ticket_row.host == h1.ssh_address, "the ticket names h1's address from its record"

        url = dashboard.url.replace("http://", "ws://") + f"/console/ws/{vm_id}"
        async with connect(
            url,
            additional_headers={"Cookie": f"kvmvdi_console={ticket}"},
            origin=dashboard.url,  # type: ignore[arg-type]
            subprotocols=["binary"],  # type: ignore[list-item]
        ) as ws:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), timeout=30)
            assert ws.close_code == 4502, "h1's own loopback is unreachable from the dashboard"

        gateway = dashboard.services.consoles.gateway
        assert gateway is not None
        answer, stream = await asyncio.to_thread(
            connect_through_gateway, ("127.0.0.1", gateway.port), f"127.0.0.1:{display.port}", ticket=ticket
        )
        stream.close()
        assert answer.status == 403
        assert display.connections == 0, "nothing reached the dashboard's loopback"
    finally:
        h1.virsh("destroy", DOMAIN, check=False)
        h1.virsh("undefine", DOMAIN, check=False)
        disk.unlink(missing_ok=True)
