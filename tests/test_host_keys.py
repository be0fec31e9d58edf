"""Host-key pinning against a real OpenSSH server on the loopback hypervisor.

First contact shows the fingerprint and pins nothing; the admin's confirmation
pins exactly that key; a changed key is shown next to the pinned one and needs
an explicit re-pin.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from app.db.schema import hypervisors
from app.hyper.sshkeys import ensure_dashboard_key
from tests.dashboard import BrowserLikeClient, RunningDashboard
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.services.sshd import SshServer

API = "/api/v1/admin/hypervisors"


@pytest.fixture
def own_sshd(run_dir: RunDir, hypervisor_host: LibvirtHost) -> Iterator[SshServer]:
    """A second sshd on the loopback hypervisor, with a host key this test may change at will."""
    server = SshServer(run_dir, "hostkey-sshd", enter=hypervisor_host.enter_prefix())
    server.start()
    try:
        yield server
    finally:
        server.close()


def ssh_keygen_fingerprint(server: SshServer) -> str:
    """The fingerprint as an admin reads it on the hypervisor (``ssh-keygen -lf``)."""
    pub = server.host_key_path.with_name(server.host_key_path.name + ".pub")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


async def _add_ssh_hypervisor(admin: BrowserLikeClient, server: SshServer) -> int:
    response = await admin.post(
        "/hypervisors/new",
        {
            "name": "loop",
            "transport": "ssh",
            "address": server.address,
            "ssh_port": str(server.port),
            "ssh_user": server.user,
            "images_dir": "/var/lib/kvm-vdi/images",
            "volatile_dir": "/var/lib/kvm-vdi/volatile",
            "iso_dir": "/var/lib/kvm-vdi/iso",
        },
    )
    assert response.status_code == 303
    match = re.match(r"/hypervisors/(\d+)/host-key", response.headers["location"])
    assert match, response.headers["location"]
    return int(match.group(1))


async def _pinned(dashboard: RunningDashboard, hv_id: int) -> tuple[str | None, bool]:
    row = await dashboard.services.db.fetch_one(hypervisors.select().where(hypervisors.c.id == hv_id))
    assert row is not None
    return row["host_key"], bool(row["host_key_confirmed"])


async def test_first_contact_shows_the_fingerprint_and_pins_nothing(
    dashboard: RunningDashboard, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_ssh_hypervisor(admin, own_sshd)
    page = (await admin.get(f"/hypervisors/{hv_id}/host-key")).text
    assert f'id="presented-fingerprint">{ssh_keygen_fingerprint(own_sshd)}<' in page
    assert "Confirm and pin this key" in page
    assert await _pinned(dashboard, hv_id) == (None, False)


async def test_the_confirmed_key_is_pinned_and_written_to_known_hosts(
    dashboard: RunningDashboard, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_ssh_hypervisor(admin, own_sshd)
    fingerprint = ssh_keygen_fingerprint(own_sshd)

    unticked = await admin.post(f"/hypervisors/{hv_id}/host-key", {"fingerprint": fingerprint})
    assert unticked.status_code == 400 and "I compared the fingerprints" in unticked.text
    assert await _pinned(dashboard, hv_id) == (None, False)

    confirmed = await admin.post(
        f"/hypervisors/{hv_id}/host-key", {"fingerprint": fingerprint, "verified": "on"}
    )
    assert confirmed.status_code == 303
    assert await _pinned(dashboard, hv_id) == (own_sshd.host_key_line(), True)
    known_hosts = dashboard.services.known_hosts.path.read_text()
    assert own_sshd.known_hosts_line() in known_hosts.splitlines()
    page = (await admin.get(f"/hypervisors/{hv_id}/host-key")).text
    assert "presents the pinned key" in page
    audit = await dashboard.services.audit.recent(action="host_key_pinned")
    assert audit[0]["target"] == "loop" and audit[0]["details"]["fingerprint"] == fingerprint


async def test_a_fingerprint_other_than_the_presented_one_is_not_pinned(
    dashboard: RunningDashboard, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_ssh_hypervisor(admin, own_sshd)
    stale = ssh_keygen_fingerprint(own_sshd)
    own_sshd.regenerate_host_key()  # the key changes between showing and confirming
    response = await admin.post(f"/hypervisors/{hv_id}/host-key", {"fingerprint": stale, "verified": "on"})
    assert response.status_code == 409
    assert f"not the confirmed {stale}" in response.text
    assert await _pinned(dashboard, hv_id) == (None, False)


async def test_a_changed_host_key_is_shown_next_to_the_pinned_one_and_can_be_re_pinned(
    dashboard: RunningDashboard, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_ssh_hypervisor(admin, own_sshd)
    old = ssh_keygen_fingerprint(own_sshd)
    await admin.post(f"/hypervisors/{hv_id}/host-key", {"fingerprint": old, "verified": "on"})

    own_sshd.regenerate_host_key()
    new = ssh_keygen_fingerprint(own_sshd)
    page = (await admin.get(f"/hypervisors/{hv_id}/host-key")).text
    assert "The host key of loop changed." in page
    assert f'id="pinned-fingerprint">{old}<' in page and f'id="presented-fingerprint">{new}<' in page
    assert "Re-pin: trust the new key" in page
    assert (await _pinned(dashboard, hv_id))[0] != own_sshd.host_key_line(), "nothing changes by looking"

    response = await admin.post(f"/hypervisors/{hv_id}/host-key", {"fingerprint": new, "verified": "on"})
    assert response.status_code == 303
    assert await _pinned(dashboard, hv_id) == (own_sshd.host_key_line(), True)
    audit = await dashboard.services.audit.recent(action="host_key_repinned")
    assert audit[0]["details"]["previous_fingerprint"] == old and audit[0]["details"]["fingerprint"] == new


async def test_an_unreachable_server_is_reported_not_pinned(
    dashboard: RunningDashboard, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_ssh_hypervisor(admin, own_sshd)
    own_sshd.stop()
    page = await admin.get(f"/hypervisors/{hv_id}/host-key")
    assert "could not fetch the host key" in page.text
    assert f"cannot reach the SSH server at {own_sshd.address}:{own_sshd.port}" in page.text
    api = await admin.get(f"{API}/{hv_id}/host-key")
    assert api.json()["presented"] is None and "cannot reach" in api.json()["error"]


async def test_the_api_pins_only_the_fingerprint_the_caller_verified(
    dashboard: RunningDashboard, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    created = await admin.post(
        API,
        json={
            "name": "api-loop",
            "transport": "ssh",
            "address": own_sshd.address,
            "ssh_port": own_sshd.port,
            "ssh_user": own_sshd.user,
        },
    )
    hv_id = created.json()["id"]
    shown = (await admin.get(f"{API}/{hv_id}/host-key")).json()
    assert shown["presented"]["fingerprint"] == ssh_keygen_fingerprint(own_sshd)
    assert shown["pinned"] is None
    wrong = await admin.post(
        f"{API}/{hv_id}/host-key", json={"fingerprint": "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
    )
    assert wrong.status_code == 409 and wrong.json()["error"] == "host_key_mismatch"
    right = await admin.post(
        f"{API}/{hv_id}/host-key", json={"fingerprint": shown["presented"]["fingerprint"]}
    )
    assert right.status_code == 200
    assert right.json()["host_key"] == {
        "algorithm": "ssh-ed25519",
        "fingerprint": ssh_keygen_fingerprint(own_sshd),
        "confirmed": True,
    }


def test_the_dashboard_key_pair_has_its_public_half_beside_it_even_for_an_older_key(tmp_path: Path) -> None:
    """Admins are sent to data_dir/ssh for the key to authorize: id_ed25519.pub is there."""
    ssh_dir = tmp_path / "ssh"
    key = ensure_dashboard_key(ssh_dir)
    public = ssh_dir / "id_ed25519.pub"
    assert public.read_text().split()[:2] == key.public_line.split()
    assert public.stat().st_mode & 0o777 == 0o644 and (ssh_dir / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (
        asyncssh.import_public_key(public.read_text())
        .export_public_key("openssh")
        .decode()
        .startswith("ssh-ed25519 ")
    )
    # A key made before the public file existed (or a file edited since) gets it back as it should be.
    public.unlink()
    again = ensure_dashboard_key(ssh_dir)
    assert again.public_line == key.public_line and public.read_text().startswith(key.public_line)
