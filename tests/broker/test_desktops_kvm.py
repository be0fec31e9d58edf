"""The broker with real desktops: boot-sector guests under qemu/KVM on the harness hypervisors,
managed over SSH with pinned host keys; consoles through the real CONNECT gateway."""

from __future__ import annotations

import asyncio
import functools
import ssl
from pathlib import Path
from typing import Any

import pytest

from app.db.schema import audit_log, leases
from app.hyper import HypervisorUnavailable
from tests.broker.desktop_lab import GENEROUS, DesktopLab, link_through_gateway
from tests.proxy.spice_client import (
    LINK_PERMISSION_DENIED,
    TcpStream,
    connect_through_gateway,
    spice_link,
    spice_login_tls,
)
from tests.services import guests
from tests.services.guests import read_boot_counter
from tests.services.process import spawn, stop_process
from tests.services.rundir import RunDir
from tests.services.xvfb import Xvfb
from tests.waiting import eventually

pytestmark = pytest.mark.kvm


async def test_a_stopped_desktop_answers_booting_then_ready_with_a_console_that_links_through_the_gateway(
    lab: DesktopLab,
) -> None:
    vm = await lab.desktop_vm("boot")
    user_id, ann = await lab.client("ann")
    pool_id = await lab.pool("boot", [vm], [user_id])

    seen, desktop = await ann.ready(pool_id)
    assert seen[0] == "booting" and seen[-1] == "ready", seen
    assert desktop.vm_id == vm.id and (await lab.vm(vm.id)).assigned_user_id == user_id
    assert desktop.body["lease"]["heartbeat_interval"] > 0
    connection = desktop.connection
    assert connection["protocol"] == "spice"
    assert connection["console_url"] == f"/client/desktops/{vm.id}/console"
    vv = desktop.vv()
    assert vv["proxy"] == connection["proxy"] and vv["password"] == connection["password"]
    assert (vv["host"], vv["tls-port"]) == (connection["host"], str(connection["tls_port"]))
    assert connection["port"] is None and "port" not in vv, "SPICE over TLS only"

    # The grant works: a real SPICE link through the gateway (ticket as Proxy-Authorization).
    linked, stream = await asyncio.to_thread(link_through_gateway, desktop)
    stream.close()
    assert linked.ok, linked
    # The password is the desktop's own: the gateway does not let it reach anything else.
    answer, stream = await asyncio.to_thread(
        connect_through_gateway, desktop.gateway(), "127.0.0.1:22", ticket=desktop.ticket
    )
    stream.close()
    assert answer.status == 403

    # Asking again while it runs: ready at once, the same desktop, a renewed lease.
    again = await ann.request(pool_id)
    assert again.status_code == 200 and again.json()["status"] == "ready"
    assert again.json()["lease"]["id"] == desktop.lease_id


async def test_an_open_remote_viewer_session_keeps_the_lease_and_its_end_lets_the_lease_expire(
    lab: DesktopLab, xvfb: Xvfb, run_dir: RunDir, tmp_path: Path
) -> None:
    """remote-viewer through the gateway, no portal tab sending heartbeats: its console session is one."""
    vm = await lab.desktop_vm("rv")
    user_id, ann = await lab.client("ann")
    pool_id = await lab.pool("rv", [vm], [user_id], reset_on_handout=False)
    _, desktop = await ann.ready(pool_id)
    vv = tmp_path / "desktop.vv"
    vv.write_text(desktop.connection["vv"])
    log = tmp_path / "remote-viewer.log"
    viewer = spawn(["remote-viewer", str(vv)], run_id=run_dir.id, log_path=log, env=xvfb.env)
    sessions = lab.services.consoles.sessions
    try:
        # Linked: past the SPICE log-in, the viewer opened its display, inputs ... channels.
        def linked() -> bool:
            assert viewer.poll() is None, log.read_text()[-2000:]
            return any(s.via == "gateway" and len(s.channels) >= 3 for s in sessions.sessions())

        await eventually(linked, "remote-viewer linked through the gateway", timeout=GENEROUS)
        assert await lab.services.broker.leases.open_console_holders() == {(user_id, vm.id)}

        # Abandoned as far as heartbeats go; the reaper (every 0.5 s here) sees the open console.
        await lab.expire(desktop.lease_id)

        async def prolonged() -> Any:
            lease = await lab.lease(desktop.lease_id)
            assert lease.ended_at is None, f"reaped: {lease.end_reason}; {log.read_text()[-2000:]}"
            return lease if lease.expires_at.year != 2000 else None

        lease = await eventually(
            prolonged, "the reaper prolonging the open console's lease", timeout=GENEROUS
        )
        assert lease.last_heartbeat_at.year > 2000
        assert (await lab.vm(vm.id)).assigned_user_id == user_id
    finally:
        stop_process(viewer, timeout=10)

    await eventually(lambda: not sessions.sessions(), "the console sessions closed", timeout=GENEROUS)
    await lab.expire(desktop.lease_id)
    lease = await lab.wait_lease_ended(desktop.lease_id)
    assert lease.end_reason == "expired"
    assert (await lab.wait_vm_free(vm.id)).last_user_id == user_id


async def test_lease_expiry_resets_the_desktop_for_real(lab: DesktopLab) -> None:
    vm = await lab.desktop_vm("reset", "diskwriter")
    user_id, ann = await lab.client("ann")
    pool_id = await lab.pool("reset", [vm], [user_id], reset_on_handout=True)
    _, desktop = await ann.ready(pool_id)
    first_boot = await lab.settled_screen(vm, guests.GREEN)
    before = lab.domain_id(vm)

    await lab.expire(desktop.lease_id)
    lease = await lab.wait_lease_ended(desktop.lease_id)
    assert lease.end_reason == "expired"
    returned = await lab.wait_vm_free(vm.id)
    assert returned.last_user_id is None, "reset: nothing of the previous user is left to protect"
    assert lab.domain_id(vm) != before, "a new QEMU process"
    second_boot = await lab.settled_screen(vm, guests.GREEN)
    assert second_boot != first_boot, "the guest counted a second boot on its disk"
    await lab.world.service.power(vm.id, "poweroff")
    await lab.world.wait_state(vm.id, "shutoff")
    assert read_boot_counter(Path(vm.disk_path)) == 2
    record = await lab.db.fetch_one(audit_log.select().where(audit_log.c.action == "lease_expired"))
    assert record is not None and '"reset": true' in record.details_json


async def test_a_volatile_desktop_handed_to_a_second_user_has_been_reset(lab: DesktopLab) -> None:
    vm = await lab.desktop_vm("vol", "diskwriter", volatile=True)
    overlay = lab.world.h0.volatile_dir / f"{vm.name}.volatile.qcow2"
    ann_id, ann = await lab.client("ann")
    bob_id, bob = await lab.client("bob")
    # The pool would not reset; a volatile desktop is reset all the same.
    pool_id = await lab.pool("vol", [vm], [ann_id, bob_id], reset_on_handout=False)

    _, first = await ann.ready(pool_id)
    assert overlay.exists(), "it runs on a per-boot overlay"
    ann_screen = await lab.settled_screen(vm, guests.GREEN)
    ann_boot = lab.domain_id(vm)
    assert (await ann.release(first.lease_id)).status_code == 204
    await lab.wait_vm_free(vm.id)
    reset_boot = lab.domain_id(vm)
    assert reset_boot != ann_boot

    seen, second = await bob.ready(pool_id)
    assert second.vm_id == vm.id and seen == ["ready"], "already reset and running: no wait"
    assert lab.domain_id(vm) == reset_boot, "reset once, on its way back"
    bob_screen = await lab.settled_screen(vm, guests.GREEN)
    # The guest counts its boots on its disk: the same count as in Ann's boot means the
    # write of that boot was discarded with its overlay.
    assert bob_screen == ann_screen
    await lab.world.service.power(vm.id, "poweroff")
    await lab.world.wait_state(vm.id, "shutoff")
    await lab.world.settle()
    assert read_boot_counter(Path(vm.disk_path)) == 0, "the desktop's own disk was never written"
    assert not overlay.exists()


async def test_a_desktop_still_marked_with_its_previous_user_is_reset_only_for_someone_else(
    lab: DesktopLab,
) -> None:
    """A return cut short (dashboard restart before the reset) leaves the previous user on the desktop."""
    vm = await lab.desktop_vm("handout")
    ann_id, ann = await lab.client("ann")
    bob_id, bob = await lab.client("bob")
    pool_id = await lab.pool("handout", [vm], [ann_id, bob_id], reset_on_handout=True)
    broker = lab.services.broker

    async def interrupted_return(lease_id: int) -> None:
        await lab.db.execute(
            leases.update().where(leases.c.id == lease_id).values(ended_at=leases.c.started_at)
        )
        # What the broker does at start-up with desktops assigned without a lease.
        assert await broker.allocator.free_orphans() == [vm.id]

    _, first = await ann.ready(pool_id)
    boot = lab.domain_id(vm)
    await interrupted_return(first.lease_id)
    assert (await lab.vm(vm.id)).last_user_id == ann_id

    seen, _ = await ann.ready(pool_id)
    assert seen == ["ready"] and lab.domain_id(vm) == boot, "back to its previous user: no reset"
    again = await lab.db.fetch_one(
        leases.select().where(leases.c.user_id == ann_id, leases.c.ended_at.is_(None))
    )
    await interrupted_return(again.id)

    seen, desktop = await bob.ready(pool_id)
    assert seen[0] == "booting" and desktop.vm_id == vm.id, "reset before it went to Bob"
    assert lab.domain_id(vm) != boot


async def test_a_direct_spice_client_is_cut_off_when_its_user_releases_the_desktop(lab: DesktopLab) -> None:
    """A client that can route to the hypervisor goes around the gateway with the password the
    broker handed out. Releasing the lease changes that password with connected='disconnect':
    SPICE itself hangs up on the client, although the desktop keeps running (its pool resets
    nothing)."""
    vm = await lab.desktop_vm("direct")
    user_id, ann = await lab.client("ann")
    pool_id = await lab.pool("direct", [vm], [user_id], reset_on_handout=False)
    _, desktop = await ann.ready(pool_id)
    boot = lab.domain_id(vm)
    host, port, password = (
        desktop.connection["host"],
        desktop.connection["tls_port"],
        desktop.connection["password"],
    )
    trust = ssl.create_default_context(cadata=desktop.connection["ca"])
    direct = await asyncio.to_thread(TcpStream.open, host, port, tls=trust)
    try:
        assert (await asyncio.to_thread(spice_link, direct, password)).ok
        assert (await ann.release(desktop.lease_id)).status_code == 204
        # SPICE itself hangs up: what it had sent drains, then the connection ends (a timeout fails).
        await asyncio.to_thread(functools.partial(direct.read_until_closed, timeout=30))
    finally:
        direct.close()
    assert lab.domain_id(vm) == boot, "the same QEMU process: the password cut the client, not a restart"
    refused = await asyncio.to_thread(spice_login_tls, host, port, password, trust)
    assert refused == LINK_PERMISSION_DENIED


async def test_a_desktop_on_a_fenced_hypervisor_is_never_handed_out(lab2: DesktopLab) -> None:
    h1 = lab2.world.hosts[1]
    on_h0 = await lab2.desktop_vm("f0")
    on_h1 = await lab2.desktop_vm("f1", where=h1)
    ann_id, ann = await lab2.client("ann")
    bob_id, bob = await lab2.client("bob")
    both = await lab2.pool("both", [on_h0, on_h1], [ann_id, bob_id])
    only_h1 = await lab2.pool(
        "h1only",
        [await lab2.desktop_vm("f2", where=h1)],
        [ann_id],
        failover_kind="rdp",
        failover_host="ts.example.org",
    )
    registry = lab2.world.registry
    await asyncio.to_thread(h1.host.stop_sshd)
    try:
        await registry.wait_for_state(h1.id, "down", GENEROUS)
        with pytest.raises(HypervisorUnavailable):
            registry.get(h1.id)
        _, desktop = await ann.ready(both)
        assert desktop.vm_id == on_h0.id
        refused = await bob.request(both)
        assert (refused.status_code, refused.json()["error"]) == (409, "no_free_desktop")
        failover = await ann.request(only_h1)
        assert failover.status_code == 200
        assert failover.json() == {
            "status": "failover",
            "reason": "all_hypervisors_down",
            "failover": {"protocol": "rdp", "host": "ts.example.org", "domain": ""},
        }
        assert (await lab2.vm(on_h1.id)).assigned_user_id is None
    finally:
        await asyncio.to_thread(h1.host.start_sshd)
    # Back up: its desktops are handed out again, once the resync has seen what they run.
    await registry.wait_for_state(h1.id, "up", GENEROUS)
    await lab2.world.settle()
    _, desktop = await bob.ready(both)
    assert desktop.vm_id == on_h1.id


async def test_ending_a_session_from_the_sessions_page_revokes_its_consoles_and_returns_the_desktop(
    lab: DesktopLab,
) -> None:
    vm = await lab.desktop_vm("end")
    user_id, ann = await lab.client("ann")
    pool_id = await lab.pool("end", [vm], [user_id], reset_on_handout=True)
    _, desktop = await ann.ready(pool_id)
    boot = lab.domain_id(vm)
    linked, stream = await asyncio.to_thread(link_through_gateway, desktop)
    assert linked.ok, linked
    admin = await lab.world.admin()
    try:
        page = await admin.get("/sessions")
        assert f'data-lease-id="{desktop.lease_id}"' in page.text and "remote-viewer" in page.text
        ended = await admin.post(f"/sessions/{desktop.lease_id}/end")
        assert ended.status_code == 303

        # The open console is cut by the proxy ...
        def closed_by_proxy() -> bool:
            stream.sock.settimeout(GENEROUS)
            try:
                while stream.sock.recv(65536):
                    pass
            except OSError:
                pass
            return True

        assert await asyncio.to_thread(closed_by_proxy)
    finally:
        stream.close()
    # ... and its ticket opens nothing any more.
    answer, again = await asyncio.to_thread(
        connect_through_gateway, desktop.gateway(), desktop.display, ticket=desktop.ticket
    )
    again.close()
    assert answer.status in (403, 407)
    lease = await lab.lease(desktop.lease_id)
    assert lease.end_reason == "ended_by_admin"
    returned = await lab.wait_vm_free(vm.id)
    assert returned.last_user_id is None and lab.domain_id(vm) != boot, "reset on its way back"
    revoked = await lab.services.audit.recent(action="console.revoke")
    assert revoked and revoked[0]["details"]["reason"] == "ended_by_admin"
    assert "Nobody holds a desktop" in (await admin.get("/sessions")).text


async def test_a_client_gets_a_console_only_for_a_desktop_it_holds(lab: DesktopLab) -> None:
    vm = await lab.desktop_vm("mine")
    ann_id, ann = await lab.client("ann")
    await lab.client("bob")
    pool_id = await lab.pool("mine", [vm], [ann_id], reset_on_handout=False)
    _, desktop = await ann.ready(pool_id)

    bob = await lab.portal("bob")
    for attempt in (
        await bob.post(f"/client/desktops/{vm.id}/console", json={}),
        await bob.post(f"/client/desktops/{vm.id}/vv"),
    ):
        assert attempt.status_code == 403 and "set-cookie" not in attempt.headers
    assert (await bob.get(f"/client/desktops/{vm.id}/console")).status_code == 403

    ann_portal = await lab.portal("ann")
    opened = await ann_portal.post(f"/client/desktops/{vm.id}/console", json={})
    assert opened.status_code == 200 and opened.json()["vm"]["id"] == vm.id
    assert (await ann.release(desktop.lease_id)).status_code == 204
    after = await ann_portal.post(f"/client/desktops/{vm.id}/console", json={})
    assert (after.status_code, after.json()["error"]) == (403, "not_your_desktop")
    # Released: the ticket the API answer carried opens nothing either.
    answer, stream = await asyncio.to_thread(
        connect_through_gateway, desktop.gateway(), desktop.display, ticket=desktop.ticket
    )
    stream.close()
    assert answer.status in (403, 407)
