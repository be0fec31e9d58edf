"""``kvm-vdi serve --demo``: a demo hypervisor (libvirt's test driver), registered once, and the banner."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.dashboard import BrowserLikeClient
from tests.served import ServedDashboard
from tests.services.rundir import RunDir


async def test_serve_demo_registers_the_demo_hypervisor_once(
    run_dir: RunDir, tmp_path: Path, database_url: str
) -> None:
    for round_ in range(2):
        with ServedDashboard(run_dir, tmp_path, database_url, "--demo") as served:
            if round_ == 0:
                password = served.first_admin_password()
                # Its output is what a service journal keeps: it says where the password is, not what.
                assert password not in served.output and "first-admin-password" in served.output
            client = BrowserLikeClient(served.url)
            try:
                assert (await client.login("admin", password)).status_code == 303
                await client.refresh_csrf("/account/password")
                if round_ == 0:
                    changed = await client.post(
                        "/account/password",
                        {
                            "current_password": password,
                            "new_password": "demo-admin-pw-1",
                            "repeat_password": "demo-admin-pw-1",
                        },
                    )
                    assert changed.status_code == 303
                    password = "demo-admin-pw-1"
                    assert not (tmp_path / "var" / "first-admin-password").exists(), "gone once changed"
                listing = (await client.get("/api/v1/admin/hypervisors")).json()["hypervisors"]
                assert [(hv["name"], hv["transport"], hv["libvirt_uri"]) for hv in listing] == [
                    ("demo", "test", "test:///default")
                ]
                # The registry connected to it while starting: the demo is usable at once.
                assert (listing[0]["state"], listing[0]["connected"]) == ("up", True)
                page = (await client.get("/hypervisors")).text
                assert "Demo mode" in page
                if round_ == 0:
                    await _running_demo_vm_shows_a_placeholder_picture(client)
            finally:
                await client.aclose()


async def test_without_demo_there_is_no_banner_and_no_demo_hypervisor(
    run_dir: RunDir, tmp_path: Path, database_url: str
) -> None:
    with ServedDashboard(run_dir, tmp_path, database_url) as served:
        page = httpx.get(f"{served.url}/login").text
        assert "Demo mode" not in page
        client = BrowserLikeClient(served.url)
        try:
            login = await client.login("admin", served.first_admin_password())
            assert login.headers["location"] == "/account/password"
        finally:
            await client.aclose()


async def _running_demo_vm_shows_a_placeholder_picture(client: BrowserLikeClient) -> None:
    """libvirt's test driver takes no screenshots: its running VM shows a clear placeholder,
    never a broken image."""
    # The admin asks for the table with screens (compact rows show none).
    csrf = await client.refresh_csrf("/vms")
    chosen = await client.http.patch(
        "/api/v1/admin/me/vm-table", json={"density": "comfortable"}, headers={"X-CSRF-Token": csrf}
    )
    assert chosen.status_code == 200, chosen.text
    rows = await client.get("/vms/table")
    running = re.findall(r'<img class="thumb"[^>]*>', rows.text)
    assert running, "the demo's running VM has a screen cell"
    for img in running:
        # The picture is loaded once the row is in view: from data-src.
        src = re.search(r'data-src="([^"]+)"', img)
        assert src is not None and src.group(1) == "/vms/no-screen.svg", img
        assert 'data-placeholder="/vms/no-screen.svg"' in img
    picture = await client.get("/vms/no-screen.svg")
    assert picture.status_code == 200 and picture.headers["content-type"].startswith("image/svg+xml")
    assert "No picture yet" in picture.text
    lithuanian = await client.get("/vms/no-screen.svg", headers={"Accept-Language": "lt"})
    assert "No picture" not in lithuanian.text, "the placeholder speaks the reader's language"
