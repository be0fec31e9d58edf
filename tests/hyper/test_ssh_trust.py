"""Trust over SSH: libvirt and commands reach a hypervisor only when it presents the pinned
host key and accepts the dashboard's key; the admin's check says precisely what is wrong."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import libvirt
import pytest

from app.hyper import HypervisorRecord, probe
from app.hyper.connection import LibvirtConnection
from app.hyper.sshkeys import DashboardKey, KnownHostsFile, ensure_dashboard_key, fingerprint
from tests.hyper.conftest import RegistryFactory, ssh_record
from tests.services.libvirt_host import LibvirtHost
from tests.services.ports import allocate_port, release_port
from tests.services.rundir import RunDir
from tests.services.sshd import SshServer


def other_host_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


@pytest.fixture(scope="module")
def bare_sshd(run_dir: RunDir, dashboard_key: DashboardKey) -> Iterator[SshServer]:
    """An SSH server on a machine without libvirtd (the root namespace of this one)."""
    server = SshServer(run_dir, "bare-sshd")
    server.start()
    server.authorize(dashboard_key.public_line)
    yield server
    server.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word (a hung host)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
def closed_port() -> Iterator[int]:
    port = allocate_port("127.0.0.1")
    yield port
    release_port(port)


def known_hosts_for(tmp_path: Path, *records: HypervisorRecord) -> KnownHostsFile:
    known_hosts = KnownHostsFile(tmp_path / "ssh")
    known_hosts.write([entry for record in records if (entry := record.known_hosts_entry())])
    return known_hosts


async def test_libvirt_goes_over_ssh_through_the_pinned_wrapper(
    registry_factory: RegistryFactory, h0: LibvirtHost, dashboard_key: DashboardKey
) -> None:
    harness = await registry_factory([ssh_record(h0)])
    hv = harness.registry.get(1)
    registry = harness.registry
    uri = hv.record.libvirt_uri_for(dashboard_key, registry.known_hosts)
    assert uri.startswith(f"qemu+ssh://{h0.ssh_user}@{h0.ssh_address}:{h0.ssh_port}/system?")
    assert f"command={registry.known_hosts.ssh_wrapper}" in uri
    assert f"keyfile={dashboard_key.private_path}" in uri
    assert "no_verify" not in uri
    wrapper = registry.known_hosts.ssh_wrapper.read_text()
    assert "StrictHostKeyChecking=yes" in wrapper and str(registry.known_hosts.path) in wrapper
    assert registry.known_hosts.path.read_text() == f"[{h0.ssh_address}]:{h0.ssh_port} {h0.host_key_line()}\n"
    assert (await hv.run(["id", "-un"])).stdout.strip() == h0.ssh_user
    assert hv.facts is not None and hv.facts.libvirt_version == h0.libvirt_version


async def test_a_changed_host_key_is_refused_and_the_hypervisor_marked_down(
    registry_factory: RegistryFactory, h0: LibvirtHost
) -> None:
    pinned = other_host_key()
    harness = await registry_factory([ssh_record(h0, host_key=pinned)])
    hv = harness.registry.find(1)
    assert hv is not None
    assert (hv.state, hv.reason_code, hv.connected) == ("down", "host_key_mismatch", False)
    assert fingerprint(pinned) in hv.reason and fingerprint(h0.host_key_line()) in hv.reason


async def test_libvirts_own_ssh_refuses_a_host_key_other_than_the_pinned_one(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    """Not only asyncssh: the qemu+ssh transport checks the pin too (no trust on first use)."""
    record = ssh_record(h0, host_key=other_host_key())
    known_hosts = known_hosts_for(tmp_path, record)
    pinned_before = known_hosts.path.read_text()
    connection = LibvirtConnection(record.libvirt_uri_for(dashboard_key, known_hosts), "pinned-test")
    try:
        with pytest.raises(libvirt.libvirtError):
            await connection.open(20)
    finally:
        await connection.close()
    # What libvirt ran: the wrapper, which refuses this host outright.
    ssh = await asyncio.to_thread(
        subprocess.run,
        [str(known_hosts.ssh_wrapper), "-p", str(h0.ssh_port), "-i", str(dashboard_key.private_path),
         f"{h0.ssh_user}@{h0.ssh_address}", "true"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert ssh.returncode == 255 and "Host key verification failed" in ssh.stderr
    assert known_hosts.path.read_text() == pinned_before, "nothing was added to the pinned keys"


async def test_the_check_reports_the_hypervisors_facts(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    record = ssh_record(h0)
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path, record))
    assert result.ok, result.message
    assert result.reason is None
    assert result.libvirt_version == h0.libvirt_version
    assert result.hypervisor_version.startswith("7.")
    assert result.cpus and result.cpus > 0 and result.memory_mib and result.memory_mib > 0
    assert result.images_free_bytes and result.images_free_bytes > 0
    assert result.host_key_fingerprint == fingerprint(h0.host_key_line())
    assert result.warnings == []


async def test_the_check_works_before_the_shared_known_hosts_file_knows_the_host(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    empty = known_hosts_for(tmp_path)
    result = await probe(ssh_record(h0), dashboard_key, empty)
    assert result.ok, result.message
    assert empty.path.read_text() == "", "the check does not pin anything by itself"


async def test_the_check_names_missing_directories(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    record = ssh_record(h0, iso_dir="/nonexistent/iso")
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path, record))
    assert result.ok
    assert result.warnings == [
        f"the ISO directory /nonexistent/iso is missing or not writable by {h0.ssh_user}"
    ]


async def test_the_check_classifies_a_refused_login(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    record = ssh_record(h0, ssh_user="nobody")
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path, record))
    assert (result.ok, result.reason) == (False, "auth_refused")
    assert "authorized_keys" in result.message and "nobody@" in result.message


async def test_the_check_classifies_a_host_key_mismatch_naming_both_fingerprints(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    pinned = other_host_key()
    record = ssh_record(h0, host_key=pinned)
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path, record))
    assert (result.ok, result.reason) == (False, "host_key_mismatch")
    assert f"expected {fingerprint(pinned)}, presented {fingerprint(h0.host_key_line())}" in result.message


async def test_the_check_does_not_connect_before_the_host_key_is_confirmed(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    record = ssh_record(h0, host_key_confirmed=False)
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path))
    assert (result.ok, result.reason) == (False, "host_key_unconfirmed")
    assert fingerprint(h0.host_key_line()) in result.message


async def test_the_check_classifies_an_unreachable_host(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path, closed_port: int
) -> None:
    record = ssh_record(h0, ssh_port=closed_port)
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path, record), timeout=5)
    assert (result.ok, result.reason) == (False, "unreachable")
    assert f"127.0.0.1:{closed_port}" in result.message


async def test_the_check_classifies_a_host_that_never_answers(
    h0: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path, silent_port: int
) -> None:
    record = ssh_record(h0, ssh_port=silent_port)
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path, record), timeout=2)
    assert (result.ok, result.reason) == (False, "timeout")


async def test_the_check_classifies_a_host_without_libvirt(
    bare_sshd: SshServer, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    record = HypervisorRecord(
        id=0,
        name="bare",
        address=bare_sshd.address,
        ssh_port=bare_sshd.port,
        ssh_user=bare_sshd.user,
        host_key=bare_sshd.host_key_line(),
        host_key_confirmed=True,
    )
    result = await probe(record, dashboard_key, known_hosts_for(tmp_path, record))
    assert (result.ok, result.reason) == (False, "libvirt_unavailable")
    assert "libvirt-sock" in result.message


async def test_a_down_hypervisor_is_retried_and_comes_up_once_fixed(
    registry_factory: RegistryFactory, h0: LibvirtHost, tmp_path: Path
) -> None:
    """A refused login is fixed on the hypervisor (the key gets authorized): no dashboard action needed."""
    newcomer = ensure_dashboard_key(tmp_path / "newcomer-ssh")
    harness = await registry_factory([ssh_record(h0)], key=newcomer)
    hv = harness.registry.find(1)
    assert hv is not None and (hv.state, hv.reason_code) == ("down", "auth_refused")

    h0.authorize(newcomer.public_line)
    await harness.registry.wait_for_state(1, "up", timeout=30)
    assert [(e.state) for e in harness.connection_events] == ["down", "up"]
    assert [e["action"] for e in await harness.audit.recent()][:2] == ["hypervisor_up", "hypervisor_down"]
