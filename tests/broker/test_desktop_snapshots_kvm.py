"""A desktop's user keeps snapshots of it, through the broker API and the portal, only where its
pool offers them, at most as many as the pool says, and only while they hold the desktop."""

from __future__ import annotations

import pytest

from app.db.schema import pools
from tests.broker.desktop_lab import DesktopLab
from tests.broker.records import CLIENT_PASSWORD

pytestmark = pytest.mark.kvm


async def test_a_user_keeps_snapshots_of_their_own_desktop_within_the_pools_limit(lab: DesktopLab) -> None:
    vm = await lab.desktop_vm("snap")
    ann_id, ann = await lab.client("ann")
    bob_id, bob = await lab.client("bob")
    pool_id = await lab.pool("snap", [vm], [ann_id, bob_id], reset_on_handout=False, user_snapshots=2)
    url = f"/api/v1/desktops/{vm.id}/snapshots"
    not_held = await lab.http.get(url, headers=bob.headers)
    assert not_held.status_code == 403 and not_held.json()["error"] == "not_your_desktop"

    _, desktop = await ann.ready(pool_id)
    assert desktop.vm_id == vm.id
    listed = await lab.http.get("/api/v1/pools", headers=ann.headers)
    assert listed.json()["pools"][0]["desktop"]["snapshots"] == 2
    empty = await lab.http.get(url, headers=ann.headers)
    assert empty.status_code == 200 and empty.json() == {"limit": 2, "snapshots": []}

    taken = await lab.http.post(url, headers=ann.headers, json={"name": "before-update"})
    assert taken.status_code == 200, taken.text
    assert taken.json()["state"] == "succeeded"
    [snapshot] = taken.json()["snapshots"]
    assert snapshot["name"] == "before-update" and snapshot["with_memory"], "taken running, with memory"
    named = await lab.http.post(url, headers=ann.headers, json={})
    assert named.status_code == 200 and named.json()["snapshots"][1]["name"].startswith("snap-")
    over = await lab.http.post(url, headers=ann.headers, json={"name": "third"})
    assert over.status_code == 409 and over.json()["error"] == "snapshot_limit"
    bad = await lab.http.post(url, headers=ann.headers, json={"name": "no/slash"})
    assert bad.status_code == 400 and "name" in bad.json()["fields"]

    reverted = await lab.http.post(f"{url}/before-update/revert", headers=ann.headers)
    assert reverted.status_code == 200 and reverted.json()["state"] == "succeeded", reverted.text
    assert await lab.world.hv().domain_state(vm.name) == "running", "a snapshot with memory runs on"
    deleted = await lab.http.delete(f"{url}/before-update", headers=ann.headers)
    assert deleted.status_code == 200 and [s["name"] for s in deleted.json()["snapshots"]] == [
        named.json()["snapshots"][1]["name"]
    ]
    assert (await lab.http.delete(f"{url}/before-update", headers=ann.headers)).status_code == 404

    # The portal: a page for it, and the same calls with the session cookie.
    portal = lab.world.dashboard.client()
    assert (await portal.login("ann", CLIENT_PASSWORD, path="/client/login")).status_code == 303
    home = await portal.get("/client")
    assert f'href="/client/desktops/{vm.id}/snapshots"' in home.text
    page = await portal.get(f"/client/desktops/{vm.id}/snapshots")
    assert page.status_code == 200 and f"Snapshots of {vm.name}" in page.text
    through_portal = await portal.post(f"/client/desktops/{vm.id}/snapshots", json={"name": "portal"})
    assert through_portal.status_code == 200 and len(through_portal.json()["snapshots"]) == 2
    forged = await portal.http.post(f"/client/desktops/{vm.id}/snapshots/portal/delete")
    assert forged.status_code == 403, "no CSRF token, no change"

    # A pool that stops offering them, or a desktop given back: no more snapshots for the user.
    await lab.db.execute(pools.update().where(pools.c.id == pool_id).values(user_snapshots=0))
    refused = await lab.http.get(url, headers=ann.headers)
    assert refused.status_code == 403 and refused.json()["error"] == "snapshots_not_allowed"
    await lab.db.execute(pools.update().where(pools.c.id == pool_id).values(user_snapshots=2))
    assert (await ann.release(desktop.lease_id)).status_code == 204
    gone = await lab.http.post(f"{url}/portal/revert", headers=ann.headers)
    assert gone.status_code == 403 and gone.json()["error"] == "not_your_desktop"
