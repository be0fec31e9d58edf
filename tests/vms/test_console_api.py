"""A VM's console through the admin API with a personal token: the connection as the broker API
gives a client (ticket, SPICE password, gateway, TLS details, expiry, a .vv file), in the body only,
never cached, audited as the console page's; a read-only token may not open one."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from app.clock import utcnow
from app.db.schema import audit_log
from app.vms.records import get_vm
from tests.log_capture import dashboard_logging
from tests.test_admin_tokens import bearer, make_token
from tests.vms.test_firmware_state_kvm import vv_fields
from tests.vms.world import VmWorld

pytestmark = pytest.mark.kvm


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The dashboard's log, access log included, from before the dashboard starts."""
    with dashboard_logging(log_level="DEBUG", access_log=True) as out:
        yield out


async def test_an_admin_token_opens_a_vms_console_as_the_broker_api_gives_a_desktop(
    captured: io.StringIO, vm_world: VmWorld
) -> None:
    world = vm_world
    created = await world.service.create(
        {"name": world.name("apicon"), "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(world.db, vm_id)
    assert vm is not None
    world.install_guest(world.h0, vm.disk_path, "banner")
    admin = await world.admin()
    full, reader = await make_token(admin, "consoles"), await make_token(admin, "watch", read_only="on")
    path = f"/api/v1/admin/vms/{vm_id}/console"
    async with httpx.AsyncClient(base_url=world.dashboard.url, timeout=60) as script:
        stopped = await script.post(path, headers=bearer(full))
        assert (stopped.status_code, stopped.json()["error"]) == (409, "vm_not_running")
        await world.service.power(vm_id, "start")
        await world.wait_state(vm_id, "running")

        refused = await script.post(path, headers=bearer(reader))
        assert (refused.status_code, refused.json()["error"]) == (403, "read_only_token")
        opened = await script.post(path, headers=bearer(full))
    assert opened.status_code == 200, opened.text
    assert opened.headers["cache-control"] == "no-store" and "set-cookie" not in opened.headers
    body = opened.json()
    connection = body["connection"]
    assert body["vm"] == {"id": vm_id, "name": vm.name}
    expires_at, password_until = (
        datetime.fromisoformat(body[key]) for key in ("expires_at", "password_valid_until")
    )
    assert body["expires_at"].endswith("Z") and expires_at > utcnow().replace(tzinfo=UTC)
    assert password_until >= expires_at, "the password outlives the ticket"
    assert connection["protocol"] == "spice" and connection["console_url"] == f"/vms/{vm_id}/console"
    # The gateway's proxy URL carries the ticket; the .vv file carries the same connection.
    gateway = world.dashboard.services.consoles.gateway
    assert gateway is not None
    assert connection["proxy"].endswith(f"ticket:{connection['ticket']}@127.0.0.1:{gateway.port}")
    vv = vv_fields(connection["vv"])
    assert (vv["password"], vv["proxy"], vv["host"]) == (
        connection["password"],
        connection["proxy"],
        connection["host"],
    )
    if connection["tls_port"] is not None:
        assert (
            vv["tls-port"] == str(connection["tls_port"]) and vv["host-subject"] == connection["host_subject"]
        )
        assert connection["ca"].startswith("-----BEGIN CERTIFICATE-----")
    # The ticket is a live one for this VM, issued to the token's administrator.
    ticket = await world.dashboard.services.consoles.tickets.redeem(connection["ticket"])
    assert ticket is not None and ticket.vm_id == vm_id
    entries = await world.db.fetch_all(
        sa.select(audit_log).where(audit_log.c.action == "console.open", audit_log.c.target == vm.name)
    )
    assert [entry["actor"] for entry in entries] == ["admin"], "one console opened, by the token's admin"
    assert all(connection["password"] not in entry["details_json"] for entry in entries)
    # The request is logged; none of its secrets is.
    log = captured.getvalue()
    assert f"POST {path}" in log
    for secret in (connection["password"], connection["ticket"], full):
        assert secret not in log
    await world.service.power(vm_id, "poweroff")
