""" "Check now" and ``kvm-vdi check`` against the real loopback hypervisor (sshd + libvirtd).

A reachable hypervisor reports its libvirt version, CPUs, memory and free space;
otherwise the check names the reason: host key mismatch, SSH login refused,
unreachable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.hyper.sshkeys import fingerprint
from app.tlsca import DashboardCA
from tests.cli import cli_env, kvm_vdi
from tests.dashboard import BrowserLikeClient, DashboardFactory, RunningDashboard
from tests.services.libvirt_host import LibvirtHost
from tests.services.rundir import RunDir
from tests.services.sshd import SshServer
from tests.waiting import eventually

pytestmark = pytest.mark.kvm

API = "/api/v1/admin/hypervisors"


@pytest.fixture
def own_sshd(run_dir: RunDir, hypervisor_host: LibvirtHost) -> Iterator[SshServer]:
    """A second sshd reaching the loopback hypervisor's libvirtd, with a host key this test may change."""
    server = SshServer(run_dir, "check-sshd", enter=hypervisor_host.enter_prefix())
    server.start()
    try:
        yield server
    finally:
        server.close()


async def _add_and_pin(
    dashboard: RunningDashboard,
    admin: BrowserLikeClient,
    host: LibvirtHost,
    server: SshServer,
    name: str = "loop",
) -> int:
    """Add the hypervisor behind ``server`` through the API and pin its presented key."""
    server.authorize(dashboard.services.ssh_key.authorized_keys_line)
    created = await admin.post(
        API,
        json={
            "name": name,
            "transport": "ssh",
            "address": server.address,
            "ssh_port": server.port,
            "ssh_user": server.user,
            "images_dir": str(host.images_dir),
            "volatile_dir": str(host.volatile_dir),
            "iso_dir": str(host.images_dir),
        },
    )
    assert created.status_code == 201, created.text
    hv_id = int(created.json()["id"])
    pinned = await admin.post(
        f"{API}/{hv_id}/host-key", json={"fingerprint": fingerprint(server.host_key_line())}
    )
    assert pinned.status_code == 200, pinned.text
    return hv_id


async def test_check_now_reports_the_libvirt_version_and_the_figures(
    dashboard: RunningDashboard, hypervisor_host: LibvirtHost, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_and_pin(dashboard, admin, hypervisor_host, own_sshd)
    answer = (await admin.post(f"{API}/{hv_id}/check", json={})).json()
    assert answer["ok"] is True, answer
    assert answer["figures"]["libvirt_version"] == hypervisor_host.libvirt_version
    assert answer["figures"]["cpus"] >= 1 and answer["figures"]["memory_mib"] > 0
    assert answer["figures"]["images_free_bytes"] > 0
    assert answer["message"].startswith(f"loop is reachable: libvirt {hypervisor_host.libvirt_version}, ")
    record = answer["hypervisor"]
    assert record["libvirt_version"] == hypervisor_host.libvirt_version and record["last_check_at"]
    # The list shows the figures.
    page = (await admin.get("/hypervisors")).text
    assert f'data-field="libvirt_version">{hypervisor_host.libvirt_version}<' in page
    audit = await dashboard.services.audit.recent(action="hypervisor_checked")
    assert audit[0]["target"] == "loop" and audit[0]["details"]["ok"] is True


async def test_check_now_from_the_page_reports_in_a_toast(
    dashboard: RunningDashboard, hypervisor_host: LibvirtHost, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_and_pin(dashboard, admin, hypervisor_host, own_sshd)
    response = await admin.post(f"/hypervisors/{hv_id}/check")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/hypervisors?toast=loop+is+reachable%3A+libvirt+")


async def test_a_changed_host_key_refuses_the_connection_and_names_both_fingerprints(
    dashboard_factory: DashboardFactory, hypervisor_host: LibvirtHost, own_sshd: SshServer
) -> None:
    # Fenced (marked down) after 2 s instead of 10: the same behaviour, sooner.
    dashboard = await dashboard_factory(hypervisors={"fence_after": 2, "reconnect_max": 2})
    admin = await dashboard.admin()
    hv_id = await _add_and_pin(dashboard, admin, hypervisor_host, own_sshd)
    registry = dashboard.services.hypervisors
    await registry.wait_for_state(hv_id, "up", timeout=30)  # the confirmed key works
    old = fingerprint(own_sshd.host_key_line())

    own_sshd.regenerate_host_key()
    new = fingerprint(own_sshd.host_key_line())
    answer = (await admin.post(f"{API}/{hv_id}/check", json={})).json()
    assert answer["ok"] is False
    assert answer["reason"].startswith("host key mismatch: ")
    assert old in answer["reason"] and new in answer["reason"]

    # The live connection is refused too once it reconnects: down, with the reason, and a re-pin offer.
    own_sshd.restart()  # drops the established session, as a reinstall would
    await registry.wait_for_state(hv_id, "down", timeout=60)
    # The first failed attempt may meet sshd still restarting; the next ones meet the new key.
    await eventually(
        lambda: (hv := registry.find(hv_id)) is not None and hv.reason_code == "host_key_mismatch",
        "the live connection refused for the changed host key",
    )
    record = (await admin.get(f"{API}/{hv_id}")).json()
    assert record["reason_code"] == "host_key_mismatch"
    assert old in record["reason"] and new in record["reason"]
    row = re.search(
        rf'<tr data-hypervisor-id="{hv_id}".*?</tr>', (await admin.get("/hypervisors")).text, re.S
    )
    assert row is not None
    assert 'data-field="repin" hidden' not in row.group(
        0
    ) and "Host key changed: review it and re-pin" in row.group(0)

    # Re-pinning (after the admin compared fingerprints) brings it back.
    repinned = await admin.post(f"/hypervisors/{hv_id}/host-key", {"fingerprint": new, "verified": "on"})
    assert repinned.status_code == 303
    await registry.wait_for_state(hv_id, "up", timeout=60)


async def test_check_names_a_refused_ssh_login(
    dashboard: RunningDashboard, hypervisor_host: LibvirtHost, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_and_pin(dashboard, admin, hypervisor_host, own_sshd)
    authorized = own_sshd.authorized_dir / own_sshd.user
    authorized.write_text(own_sshd.client_public_key + "\n")  # the dashboard's key removed
    answer = (await admin.post(f"{API}/{hv_id}/check", json={})).json()
    assert answer["ok"] is False and answer["reason"].startswith("SSH login refused: ")


async def test_check_names_an_unreachable_hypervisor(
    dashboard: RunningDashboard, hypervisor_host: LibvirtHost, own_sshd: SshServer
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add_and_pin(dashboard, admin, hypervisor_host, own_sshd)
    own_sshd.stop()
    answer = (await admin.post(f"{API}/{hv_id}/check", json={})).json()
    assert answer["ok"] is False
    assert answer["reason"].split(":")[0] in {"unreachable", "timeout"}


async def test_kvm_vdi_check_probes_every_hypervisor(
    dashboard: RunningDashboard, hypervisor_host: LibvirtHost, own_sshd: SshServer, tmp_path: Path
) -> None:
    admin = await dashboard.admin()
    await _add_and_pin(dashboard, admin, hypervisor_host, own_sshd)
    dirs = {name: str(tmp_path / name) for name in ("images_dir", "volatile_dir", "iso_dir")}
    for path in dirs.values():
        Path(path).mkdir()
    await admin.post(API, json={"name": "sim", "transport": "test", **dirs})
    env = cli_env(
        dashboard.settings.database_url.get_secret_value(),
        Path(dashboard.settings.data_dir),
        KVMVDI_CONSOLE__CA_DIR=str(dashboard.settings.ca_dir()),
    )
    result = kvm_vdi("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    ca_line = next(line for line in result.stdout.splitlines() if line.startswith("console CA"))
    assert " ok " in ca_line and "(0600), valid until" in ca_line
    lines = {
        " ".join(line.split()[:2]): line
        for line in result.stdout.splitlines()
        if line.startswith("hypervisor ")
    }
    assert f"libvirt {hypervisor_host.libvirt_version}" in lines["hypervisor loop"]
    # The SPICE certificate the dashboard issued when it connected, checked against its CA.
    assert "SPICE certificate valid until" in lines["hypervisor loop"]
    assert " ok " in lines["hypervisor sim"] and "libvirt" in lines["hypervisor sim"]
    # What desktops the real hypervisor runs: UEFI, Secure Boot and TPM 2.0 (here emulated where
    # its nested KVM cannot run OVMF); the test driver runs none of them, which is worth a warning.
    desktops = next(line for line in result.stdout.splitlines() if line.startswith("desktops on loop"))
    assert "UEFI yes" in desktops and "Secure Boot yes" in desktops and "TPM 2.0 yes" in desktops
    simulated = next(line for line in result.stdout.splitlines() if line.startswith("desktops on sim "))
    assert " warn " in simulated and "UEFI no" in simulated
    # Another dashboard's CA (or none) does not vouch for it.
    foreign = kvm_vdi("check", env={**env, "KVMVDI_CONSOLE__CA_DIR": str(tmp_path / "other-ca")})
    assert "console CA" in foreign.stdout and "has no CA yet" in foreign.stdout
    (tmp_path / "other-ca").mkdir()
    DashboardCA.load_or_create(tmp_path / "other-ca")
    foreign = kvm_vdi("check", env={**env, "KVMVDI_CONSOLE__CA_DIR": str(tmp_path / "other-ca")})
    loop = next(line for line in foreign.stdout.splitlines() if line.startswith("hypervisor loop"))
    assert " warn " in loop and "not from this dashboard's CA" in loop

    # Missing directories are worth a warning, not a failure.
    # kvm-vdi check works on the same SQLite file as the running dashboard (its trial domains'
    # events included): the dashboard may have found the file busy and answer 503 for a moment.
    async def answers() -> bool:
        return (await admin.get("/api/v1/admin/hypervisors")).status_code == 200

    await eventually(answers, "the dashboard's database answering again", interval=0.5)
    added = await admin.post(
        API, json={"name": "sim-nodirs", "transport": "test", "images_dir": str(tmp_path / "nope")}
    )
    assert added.status_code == 201, added.text
    warned = kvm_vdi("check", env=env)
    assert warned.returncode == 0
    line = next(line for line in warned.stdout.splitlines() if line.startswith("hypervisor sim-nodirs"))
    assert " warn " in line and f"the images directory {tmp_path / 'nope'} is missing" in line

    own_sshd.regenerate_host_key()
    failed = kvm_vdi("check", env=env)
    assert failed.returncode == 1
    assert "FAIL" in failed.stdout and "host key mismatch" in failed.stdout
    assert failed.stdout.rstrip().endswith("1 check(s) failed"), "only the changed key fails"
