"""The admin JSON API and the live websocket: what automation and browsers see."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from app.vms.records import get_vm
from tests.vms.conftest import DashboardWorld

pytestmark = pytest.mark.kvm


async def live_socket(env: DashboardWorld, client: object) -> websockets.ClientConnection:
    dashboard = env.dashboard
    cookies = "; ".join(f"{k}={v}" for k, v in client.http.cookies.items())  # type: ignore[attr-defined]
    return await websockets.connect(
        dashboard.url.replace("http", "ws") + "/live",
        additional_headers={"Cookie": cookies},
        origin=dashboard.url,  # type: ignore[arg-type]
    )


async def next_vm_message(
    socket: websockets.ClientConnection, vm_id: int, state: str, timeout: float = 60
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(socket.recv(), max(0.1, deadline - time.monotonic()))
        message = json.loads(raw)
        data = message.get("data", {})
        if message.get("topic") == "vm" and data.get("id") == vm_id and data.get("state") == state:
            return data


async def test_power_actions_through_the_api_arrive_as_vm_messages_on_the_live_websocket(
    vm_dashboard: DashboardWorld,
) -> None:
    env = vm_dashboard
    world = env.world
    admin = await env.dashboard.admin()
    name = world.name("api")
    response = await admin.post(
        "/api/v1/admin/vms",
        json={"name": name, "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1},
    )
    assert response.status_code == 201, response.text
    vm_id = response.json()["vms"][0]["id"]
    vm = await get_vm(world.db, vm_id)
    assert vm is not None
    world.install_guest(world.h0, vm.disk_path, "banner")
    socket = await live_socket(env, admin)
    try:
        response = await admin.post(f"/api/v1/admin/vms/{vm_id}/power", json={"action": "start"})
        assert response.status_code == 202, response.text
        running = await next_vm_message(socket, vm_id, "running")
        assert running["name"] == name
        response = await admin.post(f"/api/v1/admin/vms/{vm_id}/power", json={"action": "poweroff"})
        assert response.status_code == 202, response.text
        await next_vm_message(socket, vm_id, "shutoff")
    finally:
        await socket.close()
    listed = (await admin.get("/api/v1/admin/vms")).json()["vms"]
    assert [(v["name"], v["state"]) for v in listed] == [(name, "shutoff")]


async def test_api_errors_are_json_naming_the_field_and_unsafe_calls_need_the_csrf_header(
    vm_dashboard: DashboardWorld,
) -> None:
    env = vm_dashboard
    admin = await env.dashboard.admin()
    response = await admin.post(
        "/api/v1/admin/vms", json={"name": "no way", "hypervisor_id": env.world.h0.id}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid" and "name" in body["fields"]
    response = await admin.http.post(
        "/api/v1/admin/vms", json={"name": "x", "hypervisor_id": env.world.h0.id}
    )
    assert response.status_code == 403 and response.json()["error"] == "csrf_failed"
    response = await admin.post("/api/v1/admin/vms/9999/power", json={"action": "start"})
    assert response.status_code == 404
    anonymous = env.dashboard.client()
    response = await anonymous.get("/api/v1/admin/vms")
    assert response.status_code == 401


async def test_dhcp_export_lists_vms_with_a_network_by_mac_address(vm_dashboard: DashboardWorld) -> None:
    env = vm_dashboard
    admin = await env.dashboard.admin()
    wired = env.world.name("wired")
    bare = env.world.name("bare")
    for name, network in ((wired, "br0"), (bare, None)):
        response = await admin.post(
            "/api/v1/admin/vms",
            json={"name": name, "hypervisor_id": env.world.h0.id, "disk_size_gib": 1, "network": network},
        )
        assert response.status_code == 201, response.text
    mac = next(
        v["mac_address"] for v in (await admin.get("/api/v1/admin/vms")).json()["vms"] if v["name"] == wired
    )
    response = await admin.get("/vms/dhcp.conf")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    assert f"host {wired} {{\n  hardware ethernet {mac};" in response.text
    assert bare not in response.text
    page = await admin.get("/vms")
    assert page.status_code == 200 and wired in page.text and bare in page.text
