"""The registry: one connection per configured hypervisor, its state recorded, published,
audited and told to listeners; domain operations and events on a connected hypervisor.

These tests use libvirt's test driver (a private in-process hypervisor per test) for
speed; tests/hyper/test_kvm_domains.py repeats what matters on real KVM over SSH.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db.schema import hypervisors
from app.hyper import (
    DomainNotFound,
    HypervisorError,
    HypervisorNotFound,
    HypervisorRecord,
    HypervisorUnavailable,
    InvalidDomainState,
)
from tests.hyper.conftest import RegistryFactory, ssh_record
from tests.services.guests import decode_image
from tests.services.libvirt_host import LibvirtHost


def driver_record(tmp_path: Path, name: str = "demo") -> HypervisorRecord:
    """A ``test`` hypervisor with its own private test-driver instance and directories."""
    node = tmp_path / f"{name}-node.xml"
    node.write_text("<node/>\n")
    for kind in ("images", "volatile", "iso"):
        (tmp_path / f"{name}-{kind}").mkdir(exist_ok=True)
    return HypervisorRecord(
        id=0,
        name=name,
        transport="test",
        libvirt_uri=f"test://{node}",
        address="",
        images_dir=str(tmp_path / f"{name}-images"),
        volatile_dir=str(tmp_path / f"{name}-volatile"),
        iso_dir=str(tmp_path / f"{name}-iso"),
    )


def driver_xml(name: str, port: int = 5901, listen: str = "0.0.0.0") -> str:  # noqa: S104
    return (
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type>hvm</type></os><devices>"
        f"<graphics type='spice' port='{port}' autoport='no' listen='{listen}'/>"
        "</devices></domain>"
    )


async def test_a_reachable_hypervisor_is_up_recorded_audited_and_published(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    harness = await registry_factory([driver_record(tmp_path)])
    hv = harness.registry.get(1)

    assert (hv.state, hv.connected, hv.accepting_work) == ("up", True, True)
    row = await harness.row(1)
    assert row["state"] == "up"
    assert row["state_reason"] == ""
    assert row["state_changed_at"] is not None
    assert row["libvirt_version"].count(".") == 2
    assert row["cpus"] == 16 and row["memory_mib"] == 3072
    assert row["images_free_bytes"] > 0
    audited = await harness.audit.recent(action="hypervisor_up")
    assert [entry["target"] for entry in audited] == ["demo"]
    published = harness.published()
    assert published[-1]["state"] == "up" and published[-1]["id"] == 1
    assert [(e.hypervisor_id, e.state) for e in harness.connection_events] == [(1, "up")]


async def test_domains_are_defined_started_stopped_and_removed_with_events_in_order(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    harness = await registry_factory([driver_record(tmp_path)])
    hv = harness.registry.get(1)

    info = await hv.define(driver_xml("desk-1"))
    assert (info.name, info.state, info.persistent) == ("desk-1", "shutoff", True)
    defined = await harness.wait_for_domain_event("desk-1", "defined")
    assert (defined.reason, defined.state) == ("added", "shutoff")
    assert await hv.start("desk-1") is True
    assert await hv.start("desk-1") is False, "starting a running domain changes nothing"
    assert await hv.domain_state("desk-1") == "running"
    assert [(d.name, d.state) for d in await hv.list_domains()] == [("desk-1", "running")]
    await hv.reboot("desk-1")
    await hv.reset("desk-1")
    await hv.shutdown("desk-1")
    assert await hv.domain_state("desk-1") == "shutoff"
    await hv.start("desk-1")
    assert await hv.destroy("desk-1") is True
    assert await hv.destroy("desk-1") is False, "forcing off a stopped domain changes nothing"
    await hv.undefine("desk-1")
    assert await hv.list_domains() == []

    last = await harness.wait_for_domain_event("desk-1", "undefined")
    assert last.state == "undefined" and last.reason == "removed"
    events = [(e.event, e.reason, e.state) for e in harness.domain_events if e.name == "desk-1"]
    assert events[:2] == [("defined", "added", "shutoff"), ("started", "booted", "running")]
    assert ("stopped", "destroyed", "shutoff") in events
    assert events[-1] == ("undefined", "removed", "undefined")
    assert all(e.uuid == info.uuid and e.hypervisor_id == 1 for e in harness.domain_events)


async def test_domain_errors_name_what_is_wrong(registry_factory: RegistryFactory, tmp_path: Path) -> None:
    harness = await registry_factory([driver_record(tmp_path)])
    hv = harness.registry.get(1)
    with pytest.raises(DomainNotFound):
        await hv.start("no-such-desktop")
    with pytest.raises(HypervisorError, match="failed to validate"):
        await hv.define(driver_xml("broken").replace("<devices>", "<devices><bogus/>"))
    await hv.define(driver_xml("desk-2"))
    with pytest.raises(InvalidDomainState):
        await hv.screenshot_png("desk-2")
    with pytest.raises(InvalidDomainState):
        await hv.spice_endpoint("desk-2")
    await hv.start("desk-2")
    with pytest.raises(InvalidDomainState, match="power it off"):
        await hv.undefine("desk-2")
    await hv.destroy("desk-2")
    await hv.undefine("desk-2")


async def test_screenshots_are_png_thumbnails_no_wider_than_asked(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    harness = await registry_factory([driver_record(tmp_path)])
    hv = harness.registry.get(1)
    await hv.define(driver_xml("desk-3"))
    await hv.start("desk-3")
    full = decode_image(await hv.screenshot_png("desk-3", max_width=0))
    small_png = await hv.screenshot_png("desk-3", max_width=200)
    assert small_png.startswith(b"\x89PNG")
    small = decode_image(small_png)
    assert small.width == 200
    assert abs(small.height - round(full.height * 200 / full.width)) <= 1
    await hv.destroy("desk-3")


async def test_the_spice_endpoint_is_the_hypervisors_console_address_never_the_listen_address(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    # The test driver's displays have a plain port only: allowed on this record.
    harness = await registry_factory([replace(driver_record(tmp_path), spice_plain=True)])
    hv = harness.registry.get(1)
    await hv.define(driver_xml("desk-4", port=5904, listen="0.0.0.0"))  # noqa: S104
    await hv.define(driver_xml("desk-5", port=5905, listen="192.0.2.7"))
    await hv.start("desk-4")
    await hv.start("desk-5")
    assert await hv.spice_endpoint("desk-4") == ("127.0.0.1", 5904, None), "a local hypervisor: loopback"
    # A domain's XML names its listen address, but a domain defined elsewhere could name any:
    # the proxy only ever connects to the hypervisor's own address.
    assert await hv.spice_endpoint("desk-5") == ("127.0.0.1", 5905, None)
    await harness.update(1, spice_address="spice.example.org")
    await harness.registry.reload(1)
    assert (await hv.spice_endpoint("desk-5")).host == "spice.example.org"


async def test_unknown_hypervisors_and_unreachable_ones_are_refused(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    broken = driver_record(tmp_path, "broken")
    broken = HypervisorRecord(
        **{**broken.__dict__, "libvirt_uri": "qemu+unix:///system?socket=/nonexistent/sock"}
    )
    harness = await registry_factory([broken])
    with pytest.raises(HypervisorNotFound):
        harness.registry.get(99)
    hv = harness.registry.find(1)
    assert hv is not None
    assert hv.state == "down" and hv.reason_code == "libvirt_unavailable"
    assert "/nonexistent/sock" in hv.reason
    with pytest.raises(HypervisorUnavailable, match="broken is down"):
        harness.registry.get(1)
    with pytest.raises(HypervisorUnavailable):
        await hv.list_domains()
    row = await harness.row(1)
    assert row["state"] == "down" and "/nonexistent/sock" in row["state_reason"]
    assert [e["target"] for e in await harness.audit.recent(action="hypervisor_down")] == ["broken"]


async def test_maintenance_keeps_the_connection_but_refuses_new_work(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    harness = await registry_factory([driver_record(tmp_path)])
    hv = harness.registry.get(1)
    await harness.update(1, maintenance=True)
    assert await harness.registry.reload(1) is hv

    assert hv.connected and hv.state == "up"
    assert hv.accepting_work is False
    assert harness.registry.get(1) is hv, "existing desktops can still be managed"
    with pytest.raises(HypervisorUnavailable, match="maintenance"):
        harness.registry.get(1, for_new_work=True)
    assert harness.registry.accepting_work() == []
    assert harness.published()[-1]["maintenance"] is True
    assert harness.connection_events[-1].maintenance is True

    await harness.update(1, maintenance=False)
    await harness.registry.reload(1)
    assert harness.registry.get(1, for_new_work=True) is hv


async def test_hypervisors_added_and_removed_at_run_time_are_picked_up_by_reload(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    harness = await registry_factory([])
    assert harness.registry.all() == []
    new_id = await harness.add(driver_record(tmp_path, "late"))
    hv = await harness.registry.reload(new_id)
    assert hv is not None and hv.state == "up"
    assert [h.name for h in harness.registry.accepting_work()] == ["late"]

    await harness.db.execute(sa.delete(hypervisors).where(hypervisors.c.id == new_id))
    assert await harness.registry.reload(new_id) is None
    assert harness.registry.find(new_id) is None
    assert harness.connection_events[-1].state == "removed"
    assert harness.published()[-1] == {"id": new_id, "name": "late", "state": "removed", "reason": ""}


async def test_an_unconfirmed_host_key_is_never_connected_until_confirmed(
    registry_factory: RegistryFactory, h0: LibvirtHost
) -> None:
    record = ssh_record(h0, host_key_confirmed=False)
    harness = await registry_factory([record])
    hv = harness.registry.find(1)
    assert hv is not None
    assert (hv.state, hv.reason, hv.connected) == ("unknown", "host key awaiting confirmation", False)
    known_hosts = harness.registry.known_hosts.path.read_text()
    assert record.host_key is not None and record.host_key.split()[1] not in known_hosts

    await harness.update(1, host_key_confirmed=True)
    await harness.registry.reload(1)
    assert harness.registry.get(1).state == "up"
    assert record.host_key.split()[1] in harness.registry.known_hosts.path.read_text()


async def test_a_local_hypervisor_uses_its_libvirt_uri_and_runs_commands_locally(
    registry_factory: RegistryFactory, h0: LibvirtHost, tmp_path: Path
) -> None:
    record = HypervisorRecord(
        id=0,
        name="local-h0",
        transport="local",
        libvirt_uri=h0.local_uri,
        images_dir=str(h0.images_dir),
        volatile_dir=str(h0.volatile_dir),
        iso_dir=str(h0.dir / "iso"),
    )
    harness = await registry_factory([record])
    hv = harness.registry.get(1)
    assert hv.facts is not None and hv.facts.libvirt_version == h0.libvirt_version
    assert (await hv.run(["id", "-un"])).stdout.strip() == "root", "local commands run as the dashboard"
