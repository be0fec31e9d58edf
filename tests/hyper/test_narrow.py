"""``install.sh narrow`` on a real libvirtd with polkit access control.

A hypervisor of its own whose libvirtd talks to a private system D-Bus and a real polkitd
(:mod:`tests.services.polkit`); ``install.sh narrow --domain-prefix vdi-`` writes the polkit
rules and ``access_drivers`` into that host's configuration, and libvirtd restarts with them.
The dashboard, connected as the service user over SSH as always, still does everything it
does with desktops; the same user is refused on a domain outside the prefix and on every
object that is not a domain; and ``install.sh check`` reports the mode and the refusal.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import libvirt
import pytest

from app.hyper.errors import HypervisorError
from app.hyper.eventloop import ensure_libvirt_event_loop
from app.hyper.hypervisor import Hypervisor
from app.hyper.session import Session, open_session
from app.hyper.sshkeys import DashboardKey, KnownHostsFile
from app.settings import HypervisorSettings
from tests.hyper.conftest import prepare_host, ssh_record
from tests.hyper.test_install import INSTALL
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.polkit import RULES_DIR, PolkitServices
from tests.services.process import wait_until
from tests.services.rundir import RunDir

pytestmark = pytest.mark.slow

PREFIX = "vdi-"
FOREIGN = "other-desk"  # defined by the host's administrator, not named by the dashboard
NETWORK_XML = "<network><name>kvmvdi-narrow-net</name><bridge name='kvmvdinarrow0'/></network>"


@dataclass
class NarrowedHost:
    host: LibvirtHost
    polkit: PolkitServices
    install: Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def narrowed(run_dir: RunDir, dashboard_key: DashboardKey) -> Iterator[NarrowedHost]:
    polkit = PolkitServices(run_dir, "hn-polkit")
    host = LibvirtHost(run_dir, "hn", env=polkit.env())

    def install(action: str = "narrow") -> subprocess.CompletedProcess[str]:
        # In the host's mount namespace (its /etc/libvirt and socket), with polkitd's rules directory.
        script = (
            f'mount --bind "{polkit.rules_dir}" {RULES_DIR}\n'
            f'exec bash "{INSTALL}" "$0" --user {host.ssh_user} --narrow --domain-prefix {PREFIX} '
            "--no-restart\n"
        )
        return subprocess.run(
            [
                *host.enter_prefix(),
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-ec",
                script,
                action,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        polkit.start()
        host.start()
        prepare_host(host, dashboard_key)
        foreign = host.dir / f"{FOREIGN}.xml"
        foreign.write_text(
            guests.domain_xml(FOREIGN, host.volatile_dir / f"{FOREIGN}.qcow2", virt_type=host.virt_type)
        )
        host.virsh("define", str(foreign))
        yield NarrowedHost(host, polkit, install)
    finally:
        host.stop()
        polkit.stop()


@pytest.fixture(scope="module")
def narrow_host(narrowed: NarrowedHost) -> LibvirtHost:
    """The host after ``install.sh narrow`` and a libvirtd restart."""
    first = narrowed.install()
    assert first.returncode == 0, first.stdout + first.stderr
    changed = [line for line in first.stdout.splitlines() if line.startswith("changed")]
    assert changed == [
        "changed  /etc/polkit-1/rules.d/40-kvm-vdi-libvirt.rules "
        f"(libvirt rights of {narrowed.host.ssh_user}: domains {PREFIX}*)",
        'changed  /etc/libvirt/libvirtd.conf: access_drivers = [ "polkit" ]',
    ]
    again = narrowed.install()
    assert again.returncode == 0 and "done     0 change(s)" in again.stdout, again.stdout + again.stderr
    # polkitd notices the new file by itself: wait until it answers by it (by default, no user
    # may do connect.write), then restart libvirtd, which reads access_drivers at start only.
    wait_until(
        lambda: narrowed.polkit.authorizes(narrowed.host.ssh_user, "org.libvirt.api.connect.write"),
        what="polkitd applying the narrow rules",
        timeout=30,
        log_path=narrowed.polkit.dir / "polkitd.out",
    )
    # ... and refuses what polkit's defaults let everybody do.
    assert not narrowed.polkit.authorizes(narrowed.host.ssh_user, "org.libvirt.api.connect.search-networks")
    narrowed.host.restart_libvirtd()
    redefine_foreign(narrowed.host)
    return narrowed.host


def redefine_foreign(host: LibvirtHost) -> None:
    """The host's administrator (root, who keeps every right) removes and defines the foreign domain."""
    host.virsh("undefine", FOREIGN)
    host.virsh("define", str(host.dir / f"{FOREIGN}.xml"))


async def connect(host: LibvirtHost, key: DashboardKey, tmp_path: Path) -> tuple[Hypervisor, Session]:
    """The dashboard's connection to the host as its service user (libvirt over qemu+ssh)."""
    ensure_libvirt_event_loop()
    record = ssh_record(host, id=1, spice_plain=True)
    known_hosts = KnownHostsFile(tmp_path / "ssh")
    entry = record.known_hosts_entry()
    assert entry is not None
    known_hosts.write([entry])
    session = await open_session(record, key, known_hosts)
    hv = Hypervisor(record, HypervisorSettings())
    hv.attach(session)
    return hv, session


async def disconnect(hv: Hypervisor) -> None:
    if (session := hv.detach()) is not None:
        await session.close()


async def test_the_narrowed_service_user_still_does_everything_the_dashboard_does(
    narrow_host: LibvirtHost, dashboard_key: DashboardKey, guest_images: GuestImages, tmp_path: Path
) -> None:
    host = narrow_host
    hv, session = await connect(host, dashboard_key, tmp_path)
    try:
        seen: list[str] = []

        def lifecycle(_conn: Any, domain: libvirt.virDomain, *_rest: Any) -> None:
            seen.append(domain.name())

        await session.libvirt.watch(keepalive=(5, 3), on_lifecycle=lifecycle, on_reboot=lambda *_: None)
        facts = await session.facts()
        assert facts.cpus > 0 and facts.libvirt_version
        capabilities = await hv.capabilities()
        assert host.virt_type in capabilities.domain_types
        assert host.virt_type in capabilities.domains, "domain capabilities are read too"
        # A throw-away kvmvdi-trial-* domain (TCG runs SMM everywhere).
        trial = await hv.trial("qemu", "smm")
        assert trial.works, trial.detail

        base = host.images_dir / "narrow-golden.qcow2"
        shutil.copyfile(guest_images.base("banner"), base)
        base.chmod(0o644)
        disk = host.volatile_dir / f"{PREFIX}desk.qcow2"
        await hv.create_overlay(str(base), str(disk))
        name = f"{PREFIX}desk"
        # The administrator changes a domain the dashboard does not name: no event of it comes through.
        redefine_foreign(host)
        await hv.define(guests.domain_xml(name, disk, virt_type=host.virt_type, spice_password="expired"))
        names = [d.name for d in await hv.list_domains()]
        assert name in names and FOREIGN not in names

        assert await hv.start(name)
        screen = guests.decode_image(await hv.screenshot_png(name, max_width=0))
        assert screen.width > 0
        password = "narrow-ticket-password"
        await hv.set_spice_password(name, password, datetime.now(UTC) + timedelta(minutes=5), disconnect=True)
        assert f"passwd='{password}'" in await hv.domain_xml(name, secure=True)
        endpoint = await hv.spice_endpoint(name)
        assert endpoint.port
        await hv.reset(name)
        await hv.shutdown(name)
        assert await hv.destroy(name)

        await hv.create_snapshot(name, "before")
        assert [s.name for s in await hv.snapshots(name)] == ["before"]
        await hv.revert_snapshot(name, "before")
        await hv.delete_snapshot(name, "before")
        await hv.undefine(name)
        await hv.remove_file(str(disk))
        assert name not in [d.name for d in await hv.list_domains()]
        assert name in seen, "the dashboard's own domains' events arrive"
        assert FOREIGN not in seen
    finally:
        await disconnect(hv)
        base_path = host.images_dir / "narrow-golden.qcow2"
        base_path.unlink(missing_ok=True)


async def test_the_narrowed_service_user_is_refused_everything_else(
    narrow_host: LibvirtHost, dashboard_key: DashboardKey, tmp_path: Path
) -> None:
    host = narrow_host
    hv, session = await connect(host, dashboard_key, tmp_path)
    try:
        # A domain the dashboard does not name: invisible, and refused by name.
        assert FOREIGN not in [d.name for d in await hv.list_domains()]
        for refused in (hv.domain_state(FOREIGN), hv.start(FOREIGN), hv.undefine(FOREIGN)):
            with pytest.raises(HypervisorError, match="access denied"):
                await refused
        with pytest.raises(HypervisorError, match="access denied"):
            await hv.define(guests.domain_xml("desk-2", host.volatile_dir / "desk-2.qcow2", virt_type="qemu"))

        # Objects that are not domains, even those polkit's defaults let everybody read.
        target = f"<target><path>{host.volatile_dir}</path></target>"
        pool_xml = f"<pool type='dir'><name>kvmvdi-narrow</name>{target}</pool>"
        outside: list[Callable[[libvirt.virConnect], object]] = [
            lambda conn: conn.networkDefineXML(NETWORK_XML),
            lambda conn: conn.listAllNetworks(0),
            lambda conn: conn.storagePoolDefineXML(pool_xml, 0),
            lambda conn: conn.listAllStoragePools(0),
            lambda conn: conn.listAllSecrets(0),
            lambda conn: conn.listAllDevices(0),
        ]
        for call in outside:
            with pytest.raises(HypervisorError, match="access denied"):
                await session.libvirt.call(call)

        # Its own domains, but rights the dashboard does not use: save images, reading disks.
        idle = f"{PREFIX}idle"
        await hv.define(
            guests.domain_xml(idle, host.volatile_dir / f"{idle}.qcow2", virt_type=host.virt_type)
        )
        try:
            with pytest.raises(HypervisorError, match="access denied"):
                await session.libvirt.call(lambda conn: conn.lookupByName(idle).managedSaveRemove(0))
            with pytest.raises(HypervisorError, match="access denied"):
                await session.libvirt.call(lambda conn: conn.lookupByName(idle).blockPeek("vda", 0, 512, 0))
        finally:
            await hv.undefine(idle)
        assert "kvmvdi-narrow-net" not in host.virsh("net-list", "--all", "--name")
        assert FOREIGN in host.virsh("list", "--all", "--name"), "the administrator's domain is untouched"
    finally:
        await disconnect(hv)


def test_check_reports_the_narrow_mode_and_proves_it_is_in_force(
    narrow_host: LibvirtHost, narrowed: NarrowedHost
) -> None:
    user = narrow_host.ssh_user
    # (The rest of a full install, the directories and key, is not this host's: only these lines count.)
    checked = narrowed.install("check").stdout
    assert (
        f"ok       mode narrow: libvirt access control (polkit), {user} on domains {PREFIX}* only" in checked
    )
    assert f"ok       libvirt answers {user} on qemu:///system" in checked
    assert f"ok       libvirt refuses {user} what the rules do not allow (storage pools)" in checked
