"""The second hypervisor's network link goes down for 30 s while a user holds a desktop there and
a copy runs on it: it is fenced, the user's console closes saying why, the copy ends failed
without a half-written file, the first hypervisor carries on, and when the link is back the
hypervisor comes back by itself and the user reconnects to the same desktop."""

from __future__ import annotations

import asyncio
import time
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.broker.desktop_lab import DesktopLab
from tests.dashboard import BrowserLikeClient
from tests.faults.conftest import (
    FAULT_SETTINGS,
    partial_files,
    rows_agree_with_libvirt,
    source_with_data,
    until_operation,
)
from tests.proxy.spice_client import WebSocketStream, spice_link
from tests.services.libvirt_host import LibvirtHost
from tests.vms.world import GENEROUS, WorldFactory
from tests.waiting import eventually

pytestmark = pytest.mark.kvm

CUT_SECONDS = 30


async def open_console(lab: DesktopLab, client: BrowserLikeClient, vm_id: int) -> WebSocketStream:
    """The portal's HTML5 console of the user's desktop: its websocket, past the SPICE log-in."""
    grant = await client.post(f"/client/desktops/{vm_id}/console", json={})
    assert grant.status_code == 200, grant.text
    cookie = SimpleCookie()
    cookie.load(grant.headers["set-cookie"])
    url = lab.world.dashboard.url
    ws_url = url.replace("http://", "ws://") + grant.json()["websocket_path"]

    def link() -> WebSocketStream:
        stream = WebSocketStream.open(
            ws_url, cookie=f"kvmvdi_console={cookie['kvmvdi_console'].value}", origin=url
        )
        linked = spice_link(stream, grant.json()["password"])
        assert linked.ok, linked
        return stream

    return await asyncio.to_thread(link)


def close_code(stream: WebSocketStream) -> tuple[int, str]:
    """Read until the dashboard closes the console; its close code and reason."""
    try:
        while True:
            stream.conn.recv(timeout=GENEROUS)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code, closed.rcvd.reason


async def test_the_second_hypervisors_link_cut_for_30_s_while_a_user_holds_a_desktop_there(
    world_factory: WorldFactory,
    hypervisor_host: LibvirtHost,
    second_hypervisor: LibvirtHost,
    copy_source: Path,
) -> None:
    world = await world_factory([hypervisor_host, second_hypervisor], **FAULT_SETTINGS)
    lab = DesktopLab(world)
    h1 = world.hosts[1]
    net = second_hypervisor.net
    assert net is not None
    try:
        on_h1 = await lab.desktop_vm("cut1", where=h1)
        on_h0 = await lab.desktop_vm("cut0")
        ann_id, ann = await lab.client("ann")
        bob_id, bob = await lab.client("bob")
        far = await lab.pool("far", [on_h1], [ann_id], reset_on_handout=False)
        near = await lab.pool("near", [on_h0], [bob_id])
        _, desktop = await ann.ready(far)
        console = await open_console(lab, await lab.portal("ann"), on_h1.id)

        # A copy runs on h1 too.
        source_id = await source_with_data(world, copy_source, h1)
        copy = await world.service.create_initial({"name": world.name("copy"), "source_id": source_id})
        assert copy.operation_id is not None
        await until_operation(world, copy.operation_id, "Copying: ")

        closing = asyncio.create_task(asyncio.to_thread(close_code, console))
        await asyncio.to_thread(net.cut)
        cut_at = time.monotonic()

        # Fenced; the console closed with the reason; the copy failed; h0 carries on.
        await world.registry.wait_for_state(h1.id, "down", GENEROUS)
        code, reason = await closing
        assert (code, reason) == (
            4503,
            "The server running this desktop stopped answering: reconnect once it is back.",
        )
        failed = await world.service.operations.wait(copy.operation_id)
        assert failed.state == "failed" and "SSH connection to the hypervisor was lost" in failed.error, (
            failed
        )
        seen, near_desktop = await bob.ready(near)
        assert near_desktop.vm_id == on_h0.id
        sessions = await world.dashboard.services.audit.recent(action="console.session")
        assert sessions[0]["details"]["end_reason"] == "hypervisor_down"

        # The fault injected lasts CUT_SECONDS: its length is the input, not a wait for a condition.
        await asyncio.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
        await asyncio.to_thread(net.mend)

        # Back by itself; the desktop ran on and its user reconnects to it.
        await world.registry.wait_for_state(h1.id, "up", GENEROUS)
        seen, again = await ann.ready(far)
        assert seen == ["ready"] and again.vm_id == on_h1.id and again.lease_id == desktop.lease_id
        console = await open_console(lab, await lab.portal("ann"), on_h1.id)
        console.close()
        states = await rows_agree_with_libvirt(world, second_hypervisor)
        assert states[on_h1.name] == "running"
        await eventually(
            lambda: not partial_files(second_hypervisor, world.tag), "the temporary file removed"
        )
        assert not (h1.images_dir / f"{world.name('copy')}.qcow2").exists(), "no half-copied disk"
        done = await world.service.operations.get(copy.operation_id)
        assert done is not None, "the copy's operation row is kept"
        assert "Temporary file removed" in done.message, done.message
    finally:
        await asyncio.to_thread(net.mend)
        await lab.aclose()
