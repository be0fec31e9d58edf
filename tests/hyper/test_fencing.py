"""Fencing with two real hypervisors: h0 on loopback, h1 in a network namespace of its own.

When h1 goes away (its sshd killed with every session, or its network silently
dropping packets) it is marked down, recorded, audited, published and refused for
work, while h0 carries on untouched; when h1 answers again it comes back by itself.
The waits are generous upper bounds, not timing assertions.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from app.hyper import Hypervisor, HypervisorUnavailable
from tests.hyper.conftest import RegistryFactory, RegistryHarness, ssh_record
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost

GENEROUS = 60


@dataclass
class TwoHosts:
    harness: RegistryHarness
    h0_id: int
    h1_id: int

    def hv(self, hypervisor_id: int) -> Hypervisor:
        hv = self.harness.registry.find(hypervisor_id)
        assert hv is not None
        return hv


async def place_desktop(hv: Hypervisor, host: LibvirtHost, guest_images: GuestImages, name: str) -> None:
    base = host.images_dir / f"{name}-base.qcow2"
    shutil.copyfile(guest_images.base("banner"), base)
    base.chmod(0o644)
    disk = host.images_dir / f"{name}.qcow2"
    await hv.create_overlay(str(base), str(disk))
    await hv.define(
        guests.domain_xml(name, disk, virt_type=guests.FAST_VIRT_TYPE, spice_listen=host.spice_listen)
    )
    await hv.start(name)


@pytest.fixture
async def two_hosts(
    registry_factory: RegistryFactory, h0: LibvirtHost, h1: LibvirtHost, guest_images: GuestImages
) -> AsyncIterator[TwoHosts]:
    harness = await registry_factory([ssh_record(h0, name="h0"), ssh_record(h1, name="h1")])
    hosts = TwoHosts(harness, 1, 2)
    await place_desktop(harness.registry.get(1), h0, guest_images, "fence-h0")
    await place_desktop(harness.registry.get(2), h1, guest_images, "fence-h1")
    yield hosts
    for host in (h0, h1):
        host.destroy_all_domains()
        for leftover in host.images_dir.glob("fence-*"):
            leftover.unlink()


@pytest.fixture
def h1_blackholed(h1: LibvirtHost) -> Iterator[None]:
    """h1 silently drops every packet (no RST, no ICMP): a host that froze or lost its link."""
    assert h1.net is not None
    rule = ["INPUT", "-p", "tcp", "--dport", str(h1.ssh_port), "-j", "DROP"]
    netns = ["ip", "netns", "exec", h1.net.name]
    subprocess.run([*netns, "iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run([*netns, "iptables", "-D", *rule], check=False)


async def assert_h0_unaffected(hosts: TwoHosts) -> None:
    h0 = hosts.harness.registry.get(hosts.h0_id)
    assert h0.state == "up" and h0.accepting_work
    assert [(d.name, d.state) for d in await h0.list_domains()] == [("fence-h0", "running")]
    assert hosts.h0_id not in [e.hypervisor_id for e in hosts.harness.connection_events if e.state == "down"]


async def assert_fenced(hosts: TwoHosts) -> None:
    harness = hosts.harness
    await harness.registry.wait_for_state(hosts.h1_id, "down", timeout=GENEROUS)
    h1 = hosts.hv(hosts.h1_id)
    assert not h1.connected and not h1.accepting_work
    with pytest.raises(HypervisorUnavailable, match="h1 is down"):
        harness.registry.get(hosts.h1_id)
    assert [hv.name for hv in harness.registry.accepting_work()] == ["h0"]
    row = await harness.row(hosts.h1_id)
    assert row["state"] == "down" and row["state_reason"]
    assert [e["target"] for e in await harness.audit.recent(action="hypervisor_down")] == ["h1"]
    assert {"id": hosts.h1_id, "state": "down"}.items() <= harness.published()[-1].items()
    assert (hosts.h1_id, "down") in [(e.hypervisor_id, e.state) for e in harness.connection_events]


async def assert_recovered(hosts: TwoHosts) -> None:
    harness = hosts.harness
    h1 = await harness.registry.wait_for_state(hosts.h1_id, "up", timeout=GENEROUS)
    assert harness.registry.get(hosts.h1_id) is h1
    assert [(d.name, d.state) for d in await h1.list_domains()] == [("fence-h1", "running")]
    latest_up = await harness.audit.recent(action="hypervisor_up", limit=1)
    assert latest_up[0]["target"] == "h1"
    assert (await harness.row(hosts.h1_id))["state"] == "up"


async def test_a_hypervisor_whose_sshd_dies_is_fenced_and_comes_back_by_itself(
    two_hosts: TwoHosts, h1: LibvirtHost
) -> None:
    await asyncio.to_thread(h1.stop_sshd)
    try:
        await assert_fenced(two_hosts)
        await assert_h0_unaffected(two_hosts)
    finally:
        await asyncio.to_thread(h1.start_sshd)
    await assert_recovered(two_hosts)
    await assert_h0_unaffected(two_hosts)


@pytest.mark.usefixtures("two_hosts")
async def test_a_hypervisor_that_silently_stops_answering_is_fenced_and_comes_back(
    two_hosts: TwoHosts, h1: LibvirtHost, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("h1_blackholed")
    await assert_fenced(two_hosts)
    await assert_h0_unaffected(two_hosts)
    reason = two_hosts.hv(two_hosts.h1_id).reason_code
    assert reason in ("timeout", "unreachable"), reason
    # Lift the blackhole (the fixture's teardown does it too).
    assert h1.net is not None
    subprocess.run(
        ["ip", "netns", "exec", h1.net.name, "iptables", "-D", "INPUT", "-p", "tcp", "--dport",
         str(h1.ssh_port), "-j", "DROP"],
        check=True,
    )  # fmt: skip
    await assert_recovered(two_hosts)
    await assert_h0_unaffected(two_hosts)
