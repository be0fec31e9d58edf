"""The admin JSON API and the live websocket: what automation and browsers see."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import websockets

from app.vms.records import get_vm
from tests.dashboard import BrowserLikeClient
from tests.services.guests import BLUE, decode_image
from tests.vms.world import VmWorld
from tests.waiting import eventually

pytestmark = pytest.mark.kvm


async def live_socket(world: VmWorld, client: BrowserLikeClient) -> websockets.ClientConnection:
    """The live websocket as the browser of ``client`` opens it (its session cookie, same origin)."""
    dashboard = world.dashboard
    cookies = "; ".join(f"{k}={v}" for k, v in client.http.cookies.items())
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
    vm_world: VmWorld,
) -> None:
    world = vm_world
    admin = await world.admin()
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
    socket = await live_socket(world, admin)
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
    # A state is published the moment its event arrives, then stored: wait for the store.
    await world.settle()
    listed = (await admin.get("/api/v1/admin/vms")).json()["vms"]
    # This test's own VMs: the hypervisor is shared with other tests, whose domains it may still
    # hold (a domain found there is listed as an unclassified VM).
    ours = [(v["name"], v["state"]) for v in listed if v["name"].startswith(world.tag)]
    assert ours == [(name, "shutoff")]


async def test_api_errors_are_json_naming_the_field_and_unsafe_calls_need_the_csrf_header(
    vm_world: VmWorld,
) -> None:
    admin = await vm_world.admin()
    response = await admin.post("/api/v1/admin/vms", json={"name": "no way", "hypervisor_id": vm_world.h0.id})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid" and "name" in body["fields"]
    response = await admin.http.post("/api/v1/admin/vms", json={"name": "x", "hypervisor_id": vm_world.h0.id})
    assert response.status_code == 403 and response.json()["error"] == "csrf_failed"
    response = await admin.post("/api/v1/admin/vms/9999/power", json={"action": "start"})
    assert response.status_code == 404
    anonymous = vm_world.dashboard.client()
    response = await anonymous.get("/api/v1/admin/vms")
    assert response.status_code == 401


async def test_dhcp_export_lists_vms_with_a_network_by_mac_address(vm_world: VmWorld) -> None:
    admin = await vm_world.admin()
    wired = vm_world.name("wired")
    bare = vm_world.name("bare")
    for name, network in ((wired, "br0"), (bare, None)):
        response = await admin.post(
            "/api/v1/admin/vms",
            json={"name": name, "hypervisor_id": vm_world.h0.id, "disk_size_gib": 1, "network": network},
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


async def thumbnail_versions(
    socket: websockets.ClientConnection, vm_id: int, timeout: float = 60
) -> AsyncIterator[int]:
    """The thumbnail versions announced for ``vm_id`` on the live websocket, as they come."""
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        data = message.get("data", {})
        if message.get("topic") == "vm" and data.get("id") == vm_id and data.get("change") == "thumbnail":
            yield int(data["thumbnail"])


async def test_thumbnails_are_taken_only_while_an_admin_watches_and_follow_the_screen(
    vm_world: VmWorld,
) -> None:
    world = vm_world
    thumbnails = world.service.thumbnails
    name = world.name("thumb")
    created = await world.service.create(
        {"name": name, "hypervisor_id": world.h0.id, "memory_mib": 64, "disk_size_gib": 1}
    )
    vm_id = created.vm_ids[0]
    vm = await get_vm(world.db, vm_id)
    assert vm is not None
    world.install_guest(world.h0, vm.disk_path, "banner")
    await world.service.power(vm_id, "start")
    await world.wait_state(vm_id, "running")
    interval = world.dashboard.settings.vms.thumbnail_interval

    # Nobody, or only a client portal, is watching: no screenshot is taken.
    portal = world.hub.subscribe(is_admin=False, user_id=4242)
    rounds = thumbnails.rounds
    # What does not happen is seen over time: four of the thumbnailer's own intervals pass idle.
    await asyncio.sleep(4 * interval)
    assert (thumbnails.rounds, await thumbnails.get(vm_id)) == (rounds, None)
    portal.close()

    admin = await world.admin()
    socket = await live_socket(world, admin)
    try:
        versions = thumbnail_versions(socket, vm_id)

        async def next_picture(blue: bool, after: int) -> int:
            """The next announced version whose picture is (or is not) the banner's blue screen."""
            async for version in versions:
                assert version > after, "versions only grow"
                picture = await admin.get(f"/vms/{vm_id}/thumbnail.png?v={version}")
                assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
                screen = decode_image(picture.content)
                assert screen.width <= world.dashboard.settings.vms.thumbnail_width
                if (screen.fraction(BLUE) > 0.5) == blue:
                    return version
                after = version
            raise AssertionError("the live websocket closed")

        # The firmware's screen first (the guest is booting), then the banner guest's blue.
        shown = await next_picture(blue=True, after=0)
        assert (await admin.get(f"/api/v1/admin/vms/{vm_id}")).json()["vm"]["thumbnail"] == shown
        # A reset shows the firmware's screen again for a while, then the banner: the
        # thumbnail follows with newer versions.
        await world.service.power(vm_id, "reset")
        firmware = await next_picture(blue=False, after=shown)
        await next_picture(blue=True, after=firmware)
    finally:
        await socket.close()

    # The last admin left: the rounds stop.
    await eventually(lambda: not world.hub.admin_subscriber_count, "no admin subscribed")
    rounds = thumbnails.rounds
    # What does not happen is seen over time: four of the thumbnailer's own intervals pass idle.
    await asyncio.sleep(4 * interval)
    assert thumbnails.rounds == rounds
    # The running VM's row leads to its console (the thumbnail and the actions menu).
    page = (await admin.get("/vms")).text
    assert page.count(f'href="/vms/{vm_id}/console"') == 2
    assert (await admin.get(f"/vms/{vm_id}/console")).status_code == 200
    await world.service.power(vm_id, "poweroff")
