"""The test harness itself: every service the suite relies on is real and behaves.

These tests are the specification of the fixtures in conftest.py. When one of
them fails, the tests of the application that use the same fixture cannot be
trusted either.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomysql
import asyncssh
import ldap3
import libvirt
import pymysql  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from ldap3.core.exceptions import LDAPBindError

from app.db import MIGRATION_LOCK
from tests.services import guests
from tests.services.browser import BrowserFactory, console_logs
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.mariadb import MariaDB
from tests.services.rundir import RunDir
from tests.services.samba_ad import SambaAD
from tests.services.slapd import Slapd
from tests.services.spice import spice_link
from tests.services.xvfb import Xvfb
from tests.waiting import GENEROUS, eventually_blocking


@pytest.fixture
def h0_conn(hypervisor_host: LibvirtHost) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(hypervisor_host.ssh_uri())
    yield conn
    conn.close()


def start_guest(
    conn: libvirt.virConnect,
    host: LibvirtHost,
    guest_images: GuestImages,
    kind: str,
    name: str,
    *,
    virt_type: str | None = None,
) -> tuple[libvirt.virDomain, Path]:
    disk = guest_images.overlay(kind, host.images_dir / f"{name}.qcow2")
    xml = guests.domain_xml(name, disk, virt_type=virt_type or host.virt_type, spice_listen=host.spice_listen)
    domain = conn.defineXML(xml)
    domain.create()
    return domain, disk


def remove_guest(host: LibvirtHost, name: str) -> None:
    """Through the host's own libvirtd socket, not the SSH connection the test drove: that one
    may be gone (libvirtd drops a client that leaves its keepalive probes unanswered, as a
    blocking test does while the event loop that answers them is idle), and a guest left
    behind on the shared host would show up in every later test's VM list."""
    if name in host.domain_names():
        host.virsh("destroy", name, check=False)  # it may have stopped already
        host.virsh("undefine", name)


def spice_port(domain: libvirt.virDomain) -> int:
    xml = domain.XMLDesc()
    return int(xml.split("<graphics type='spice' port='")[1].split("'")[0])


# --- run directory -------------------------------------------------------------------------------


def test_run_dir_is_private_to_this_run_and_traversable_by_service_users(run_dir: RunDir) -> None:
    assert run_dir.path.parent == Path("/tmp")
    assert run_dir.path.name == f"kvmvdi-test-{run_dir.id}"
    assert stat.S_IMODE(run_dir.path.stat().st_mode) == 0o755


# --- MariaDB -------------------------------------------------------------------------------------


async def test_mariadb_answers_through_aiomysql(mariadb: MariaDB) -> None:
    conn = await aiomysql.connect(
        host=mariadb.host, port=mariadb.port, user=mariadb.user, password=mariadb.password, db="vdi"
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE probe (id INT PRIMARY KEY, name VARCHAR(20))")
            await cur.executemany("INSERT INTO probe VALUES (%s, %s)", [(1, "a"), (2, "b")])
            await conn.commit()
            await cur.execute("SELECT COUNT(*), VERSION() FROM probe")
            count, version = await cur.fetchone()
    finally:
        conn.close()
    assert count == 2
    assert "MariaDB" in version
    assert mariadb.url == f"mysql://vdi:{mariadb.password}@127.0.0.1:{mariadb.port}/vdi"


def test_a_reset_ends_what_an_earlier_test_left_holding_locks_on_the_database(mariadb: MariaDB) -> None:
    """A session left open with the migration lock, or with a transaction on a table: the reset
    ends it, so that neither the DROP nor the next dashboard's migration waits for it."""

    def leftover(*statements: str) -> pymysql.Connection:
        session = pymysql.connect(
            host=mariadb.host, port=mariadb.port, user=mariadb.user, password=mariadb.password, database="vdi"
        )
        with session.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        return session

    def ended(session: pymysql.Connection) -> bool:
        try:
            session.ping(reconnect=False)
        except pymysql.err.OperationalError:
            return True
        finally:
            with contextlib.suppress(pymysql.err.Error, OSError):
                session.close()
        return False

    mariadb.reset()
    holder = leftover(f"SELECT GET_LOCK('{MIGRATION_LOCK}', 0)")
    mariadb.reset()
    assert mariadb.sql(f"SELECT IS_FREE_LOCK('{MIGRATION_LOCK}')").strip() == "1"
    assert ended(holder)

    # The open transaction holds the table's metadata lock, which DROP DATABASE waits for.
    reader = leftover("CREATE TABLE held (id INT PRIMARY KEY)", "BEGIN", "SELECT * FROM held")
    mariadb.reset()
    assert mariadb.sql("SHOW TABLES FROM vdi").strip() == ""
    assert ended(reader)


@pytest.mark.parametrize("attempt", [1, 2])
def test_database_url_any_is_a_fresh_empty_database_every_time(database_url_any: str, attempt: int) -> None:
    engine = sa.create_engine(database_url_any.replace("mysql://", "mysql+pymysql://", 1))
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE leftover (id INTEGER PRIMARY KEY)"))
        assert sa.inspect(engine).get_table_names() == ["leftover"]
    finally:
        engine.dispose()


def test_database_url_follows_the_selected_backend(database_url: str, database_backend: str) -> None:
    expected = {"sqlite": "sqlite:///", "mariadb": "mysql://"}[database_backend]
    assert database_url.startswith(expected)


# --- SSH -----------------------------------------------------------------------------------------


async def test_ssh_login_as_the_test_user_shows_the_hosts_key(hypervisor_host: LibvirtHost) -> None:
    async with asyncssh.connect(
        hypervisor_host.ssh_address,
        port=hypervisor_host.ssh_port,
        username=hypervisor_host.ssh_user,
        client_keys=[str(hypervisor_host.client_key_path)],
        known_hosts=None,
    ) as conn:
        result = await conn.run("id -un; id -Gn; virsh -c qemu:///system uri", check=True)
        seen = conn.get_server_host_key()
    assert seen is not None
    user, groups, uri = str(result.stdout).split("\n")[:3]
    assert user == "kvmvdi-test"
    assert {"libvirt", "kvm"} <= set(groups.split())
    assert uri == "qemu:///system"
    assert " ".join(seen.export_public_key("openssh").decode().split()[:2]) == hypervisor_host.host_key_line()


def test_sshd_can_be_stopped_and_started_again(
    hypervisor_host: LibvirtHost, h0_conn: libvirt.virConnect
) -> None:
    h0_conn.listAllDomains()
    hypervisor_host.stop_sshd()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((hypervisor_host.ssh_address, hypervisor_host.ssh_port), timeout=2)
        # A host that goes down also drops the sessions that were open.
        with pytest.raises(libvirt.libvirtError):
            h0_conn.listAllDomains()
        with pytest.raises(libvirt.libvirtError):
            libvirt.open(hypervisor_host.ssh_uri())
    finally:
        hypervisor_host.start_sshd()
    conn = libvirt.open(hypervisor_host.ssh_uri())
    assert conn.isAlive() == 1
    assert isinstance(conn.listAllDomains(), list)
    conn.close()


async def test_a_regenerated_host_key_breaks_a_pinned_connection(second_hypervisor: LibvirtHost) -> None:
    host = second_hypervisor
    pinned = asyncssh.import_known_hosts(f"{host.ssh_address} {host.host_key_line()}\n")
    options = dict(
        port=host.ssh_port,
        username=host.ssh_user,
        client_keys=[str(host.client_key_path)],
        known_hosts=pinned,
    )
    async with asyncssh.connect(host.ssh_address, **options) as conn:
        assert (await conn.run("true")).exit_status == 0
    old = host.host_key_line()
    assert host.regenerate_host_key() != old
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect(host.ssh_address, **options)


# --- libvirt hypervisors -------------------------------------------------------------------------


def test_the_hypervisor_has_its_own_libvirt_state(hypervisor_host: LibvirtHost) -> None:
    inside = hypervisor_host.run_in_host(["ls", "/run/libvirt"]).stdout.split()
    assert "libvirt-sock" in inside
    assert hypervisor_host.socket_path.is_socket()
    assert hypervisor_host.virt_type in ("kvm", "qemu")
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert hypervisor_host.virt_type == "kvm"
    conn = libvirt.open(hypervisor_host.local_uri)
    try:
        assert conn.getLibVersion() >= 9_000_000
    finally:
        conn.close()


def test_the_service_user_can_write_the_image_and_volatile_dirs(hypervisor_host: LibvirtHost) -> None:
    for directory in (hypervisor_host.images_dir, hypervisor_host.volatile_dir):
        probe = directory / "written-by-service-user"
        hypervisor_host.run_in_host(["touch", str(probe)], user=hypervisor_host.ssh_user)
        assert probe.exists()
        assert probe.owner() == hypervisor_host.ssh_user
        listing = hypervisor_host.run_in_host(["ls", str(directory)]).stdout.split()
        assert "written-by-service-user" in listing
        probe.unlink()


def test_banner_guest_boots_over_qemu_ssh_and_shows_its_screen(
    hypervisor_host: LibvirtHost, h0_conn: libvirt.virConnect, guest_images: GuestImages
) -> None:
    domain, disk = start_guest(h0_conn, hypervisor_host, guest_images, "banner", "harness-banner")
    try:
        assert f"type='{hypervisor_host.virt_type}'" in domain.XMLDesc()
        screen = guests.wait_for_screen(domain, guests.BLUE, fraction=0.8, timeout=GENEROUS)
        assert (screen.width, screen.height) == guests.TEXT_SCREEN_SIZE
        for index, colour in enumerate(guests.PALETTE):
            x = index * guests.STRIPE_WIDTH + guests.STRIPE_WIDTH // 2
            assert screen.pixel(x, guests.STRIPE_HEIGHT // 2) == colour
        assert screen.fraction(guests.WHITE) > 0.001  # the title line
        port = spice_port(domain)
        assert hypervisor_host.spice_port_range is not None
        low, high = hypervisor_host.spice_port_range
        assert low <= port <= high
        assert spice_link(hypervisor_host.spice_listen, port) == 0
        # the overlay is the guest's disk; the base stays untouched
        chain = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(disk)],
                capture_output=True,
                check=True,
            ).stdout
        )
        assert chain[1]["filename"] == str(guest_images.base("banner"))
    finally:
        remove_guest(hypervisor_host, "harness-banner")


def test_diskwriter_guest_counts_its_boots_on_its_disk(
    hypervisor_host: LibvirtHost, h0_conn: libvirt.virConnect, guest_images: GuestImages
) -> None:
    domain, disk = start_guest(
        h0_conn, hypervisor_host, guest_images, "diskwriter", "harness-diskwriter",
        virt_type=guests.FAST_VIRT_TYPE,
    )  # fmt: skip
    try:
        for boot in (1, 2):
            if boot > 1:
                domain.create()
            guests.wait_for_screen(domain, guests.GREEN)  # green = the counter was written
            domain.destroy()
            assert guests.read_boot_counter(disk) == boot
        assert guests.read_boot_counter(guest_images.base("diskwriter")) == 0
    finally:
        remove_guest(hypervisor_host, "harness-diskwriter")


def test_poweroff_guest_shuts_itself_down(
    hypervisor_host: LibvirtHost, h0_conn: libvirt.virConnect, guest_images: GuestImages
) -> None:
    domain, disk = start_guest(
        h0_conn, hypervisor_host, guest_images, "diskwriter-poweroff", "harness-poweroff",
        virt_type=guests.FAST_VIRT_TYPE,
    )  # fmt: skip
    try:
        eventually_blocking(lambda: not domain.isActive(), "the guest powered itself off")
        assert domain.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN]
        assert guests.read_boot_counter(disk) == 1
    finally:
        remove_guest(hypervisor_host, "harness-poweroff")


def test_the_second_hypervisor_is_a_separate_host_in_its_own_network(
    hypervisor_host: LibvirtHost,
    second_hypervisor: LibvirtHost,
    h0_conn: libvirt.virConnect,
    guest_images: GuestImages,
) -> None:
    h1 = second_hypervisor
    assert h1.ssh_address == h1.spice_listen != "127.0.0.1"
    assert h1.ssh_port == 22
    route = json.loads(
        subprocess.run(["ip", "-j", "route", "get", h1.ssh_address], capture_output=True).stdout
    )
    assert route[0]["dev"].startswith("kv")
    assert h1.ssh_address in h1.run_in_host(["ip", "-br", "addr"]).stdout

    h1_conn = libvirt.open(h1.ssh_uri())
    try:
        # The same domain name runs on both hosts at once: nothing is shared.
        fast = guests.FAST_VIRT_TYPE
        on_h0, _ = start_guest(
            h0_conn, hypervisor_host, guest_images, "banner", "harness-twin", virt_type=fast
        )
        on_h1, _ = start_guest(h1_conn, h1, guest_images, "banner", "harness-twin", virt_type=fast)
        assert on_h0.isActive() and on_h1.isActive()
        assert on_h0.UUIDString() != on_h1.UUIDString()
        h1_only, _ = start_guest(h1_conn, h1, guest_images, "banner", "harness-h1-only")
        assert "harness-h1-only" in h1.domain_names()
        assert "harness-h1-only" not in hypervisor_host.domain_names()
        # The guest's SPICE server listens at the namespace address, reachable from here.
        assert spice_link(h1.spice_listen, spice_port(h1_only)) == 0
        guests.wait_for_screen(h1_only, guests.BLUE, fraction=0.8, timeout=GENEROUS)
    finally:
        for host, name in ((hypervisor_host, "harness-twin"), (h1, "harness-twin"), (h1, "harness-h1-only")):
            remove_guest(host, name)
        h1_conn.close()


# --- LDAP ----------------------------------------------------------------------------------------


def test_ldap_users_bind_with_their_passwords_and_show_their_groups(slapd: Slapd) -> None:
    server = ldap3.Server(slapd.url)
    alice = slapd.users["alice"]
    with ldap3.Connection(server, alice.dn, alice.password, auto_bind=True) as conn:
        assert conn.extend.standard.who_am_i() == f"dn:{alice.dn}"
        conn.search(slapd.base_dn, "(uid=alice)", attributes=["memberOf", "gidNumber", "mail"])
        entry = conn.entries[0]
        assert sorted(entry.memberOf.values) == sorted(slapd.groups.values())
        assert entry.gidNumber.value == alice.gid_number
        assert entry.mail.value == alice.mail
    with pytest.raises(LDAPBindError):
        ldap3.Connection(server, alice.dn, "wrong password", auto_bind=True)
    bob = slapd.users["bob"]
    with ldap3.Connection(
        server, slapd.classic.service_dn, slapd.classic.service_password, auto_bind=True
    ) as conn:
        conn.search(slapd.base_dn, f"(member={bob.dn})", attributes=["cn"])
        assert [e.cn.value for e in conn.entries] == ["vdi-users"]


def test_ldap_active_directory_layout(slapd: Slapd) -> None:
    ad = slapd.ad
    server = ldap3.Server(slapd.url)
    with ldap3.Connection(server, ad.service_dn, ad.service_password, auto_bind=True) as conn:
        conn.search(
            ad.base_dn,
            "(&(objectClass=user)(userPrincipalName=alice@corp.example.com))",
            attributes=["sAMAccountName", "memberOf", "objectSid", "primaryGroupID", "userAccountControl"],
        )
        alice = conn.entries[0]
        assert alice.entry_dn == ad.users["alice"].dn == "cn=Alice Smith,cn=Users,dc=corp,dc=example,dc=com"
        assert alice.sAMAccountName.value == "alice"
        assert alice.primaryGroupID.value == 513
        assert alice.objectSid.value == ad.users["alice"].object_sid  # ldap3 decodes binary SIDs
        assert sorted(alice.memberOf.values) == sorted([ad.groups["vdi-admins"], ad.groups["vdi-users"]])
        conn.search(ad.base_dn, "(sAMAccountName=carol)", attributes=["userAccountControl"])
        assert conn.entries[0].userAccountControl.value == 514  # disabled
    user = ad.users["bob"]
    with ldap3.Connection(server, user.dn, user.password, auto_bind=True) as conn:
        assert conn.extend.standard.who_am_i() == f"dn:{user.dn}"


def test_samba_ad_is_a_real_domain_controller(samba_ad: SambaAD) -> None:
    server = ldap3.Server(samba_ad.url)
    alice = samba_ad.users["alice"]
    # AD accepts the user principal name and DOMAIN\\user as bind names, unlike slapd.
    with ldap3.Connection(server, alice.user_principal_name, alice.password, auto_bind=True) as conn:
        conn.search(
            samba_ad.base_dn,
            "(sAMAccountName=alice)",
            attributes=["memberOf", "objectSid", "primaryGroupID", "userPrincipalName"],
        )
        entry = conn.entries[0]
        assert entry.entry_dn == alice.dn == "CN=Alice Smith,CN=Users,DC=corp,DC=example,DC=com"
        assert entry.objectSid.value == alice.object_sid
        assert entry.primaryGroupID.value == 513
        assert sorted(entry.memberOf.values) == sorted(
            samba_ad.groups[g] for g in ("vdi-admins", "vdi-users")
        )
    bob = samba_ad.users["bob"]
    with ldap3.Connection(server, f"{samba_ad.netbios}\\bob", bob.password, auto_bind=True) as conn:
        assert conn.bound
    with pytest.raises(LDAPBindError):
        ldap3.Connection(server, alice.user_principal_name, "wrong password", auto_bind=True)
    carol = samba_ad.users["carol"]  # disabled: right password, still refused
    conn = ldap3.Connection(server, carol.user_principal_name, carol.password)
    assert conn.bind() is False
    assert "data 533" in conn.result["message"]  # AD's "account disabled" sub-code


# --- X and browser -------------------------------------------------------------------------------


def test_xvfb_screenshot_has_the_screen_size(xvfb: Xvfb, tmp_path: Path) -> None:
    subprocess.run(["xsetroot", "-solid", "#00a800"], env=xvfb.env, check=True)
    screen = guests.load_image(xvfb.screenshot(tmp_path / "root.png"))
    assert (screen.width, screen.height) == (xvfb.width, xvfb.height)
    assert screen.fraction(guests.GREEN) > 0.99


def test_headless_chromium_loads_a_page_and_reports_console_logs(browser: BrowserFactory) -> None:
    page = "data:text/html,<title>KVM-VDI probe</title><script>console.error('probe-error')</script>"
    with browser.session() as driver:
        driver.get(page)
        assert driver.title == "KVM-VDI probe"
        messages = [entry["message"] for entry in console_logs(driver)]
        assert any("probe-error" in m for m in messages)
