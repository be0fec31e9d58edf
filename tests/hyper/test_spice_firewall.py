"""``install.sh --spice-firewall``: a hypervisor admits its SPICE ports only from the dashboard.

The host is a network namespace of its own (its nftables ruleset is private to it) with a
private /etc/kvm-vdi and /etc/nftables.conf; the "dashboard" is the root namespace at the
veth's address. A listener on a SPICE port stands in for a display.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hyper.conftest import REPO
from tests.services.netns import NetNamespace
from tests.services.process import spawn, stop_process, wait_until
from tests.services.rundir import RunDir

INSTALL = REPO / "hypervisors" / "install.sh"
SPICE_PORT = 5930


@dataclass
class FirewalledHost:
    net: NetNamespace
    enter: list[str]
    etc: Path

    def installer(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.enter, "bash", str(INSTALL), *args], capture_output=True, text=True, timeout=60
        )

    def reachable(self, port: int = SPICE_PORT) -> bool:
        """Whether a TCP connection from the dashboard's address gets through."""
        try:
            with socket.create_connection((self.net.address, port), timeout=1.5):
                return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def firewalled_host(run_dir: RunDir) -> Iterator[FirewalledHost]:
    net = NetNamespace(run_dir, "fw").start()
    base = run_dir.sub("firewalled-host")
    etc = base / "etc"
    (etc / "kvm-vdi").mkdir(parents=True)
    (etc / "kvm-vdi" / ".kvmvdi-firewalled-host").touch()
    (etc / "nftables.conf").write_text("#!/usr/sbin/nft -f\nflush ruleset\n")
    holder_script = base / "hold.sh"
    holder_script.write_text(
        "#!/bin/sh\nset -e\n"
        f'mount --bind "{etc / "kvm-vdi"}" /etc/kvm-vdi\n'
        f'mount --bind "{etc / "nftables.conf"}" /etc/nftables.conf\n'
        "exec sleep infinity\n"
    )
    Path("/etc/kvm-vdi").mkdir(exist_ok=True)
    holder = spawn(
        [*net.exec_prefix(), "unshare", "--mount", "--propagation", "private", "sh", str(holder_script)],
        run_id=run_dir.id,
        log_path=base / "holder.out",
    )
    enter = ["nsenter", f"--target={holder.pid}", "--mount", "--net", "--"]
    wait_until(
        lambda: (
            subprocess.run([*enter, "test", "-e", "/etc/kvm-vdi/.kvmvdi-firewalled-host"]).returncode == 0
        ),
        what="firewalled host namespace",
        timeout=10,
        proc=holder,
        log_path=base / "holder.out",
    )
    displays = [
        spawn(
            [*enter, "python3", "-c", LISTENER, net.address, str(port)],
            run_id=run_dir.id,
            log_path=base / f"display-{port}.out",
        )
        for port in (SPICE_PORT, 7100)
    ]
    host = FirewalledHost(net, enter, etc)
    try:
        wait_until(lambda: host.reachable() and host.reachable(7100), what="display stand-ins", timeout=20)
        yield host
    finally:
        for display in displays:
            stop_process(display)
        stop_process(holder)
        net.stop()


LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    conn, _ = server.accept()
    conn.close()
"""


def test_the_spice_ports_admit_only_the_dashboards_addresses(firewalled_host: FirewalledHost) -> None:
    host = firewalled_host
    common = ["--spice-ports", "5900-6899"]
    # Some other dashboard's address only: this one is refused on SPICE ports, nothing else changes.
    other = host.installer("firewall", *common, "--spice-firewall", "192.0.2.10,2001:db8::10")
    assert other.returncode == 0, other.stdout + other.stderr
    assert not host.reachable(), "a SPICE port from an address that is not the dashboard's"
    assert host.reachable(7100), "ports outside the SPICE range are not touched"
    rules = (host.etc / "kvm-vdi" / "spice-firewall.nft").read_text()
    assert "ip saddr { 192.0.2.10 } tcp dport 5900-6899 accept" in rules
    assert "ip6 saddr { 2001:db8::10 } tcp dport 5900-6899 accept" in rules
    assert 'include "/etc/kvm-vdi/spice-firewall.nft"' in (host.etc / "nftables.conf").read_text()

    # The dashboard's address: admitted. Running it again replaces the table, it never stacks.
    ours = host.installer("firewall", *common, "--spice-firewall", f"{host.net.root_address},192.0.2.10")
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert host.reachable()
    tables = subprocess.run(
        [*host.enter, "nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    assert tables.count("kvm_vdi_spice") == 1
    again = host.installer("firewall", *common, "--spice-firewall", f"{host.net.root_address},192.0.2.10")
    assert "changed" not in again.stdout
    assert (host.etc / "nftables.conf").read_text().count("spice-firewall.nft") == 1


def test_firewall_addresses_are_validated_before_anything_changes(firewalled_host: FirewalledHost) -> None:
    result = firewalled_host.installer("firewall", "--spice-firewall", "10.0.0.1;nft flush ruleset")
    assert result.returncode == 2
    assert "--spice-firewall: not an IPv4 or IPv6 address" in result.stderr
