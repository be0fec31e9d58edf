"""The DHCP export is a file ISC dhcpd itself accepts: ``dhcpd -t`` (its own syntax check)
on a dhcpd.conf that includes it, for VMs of every name the dashboard allows."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.vms.world import VmWorld

DHCPD = "/usr/sbin/dhcpd"


def dhcpd_check(directory: Path, hosts: str) -> subprocess.CompletedProcess[str]:
    """``dhcpd -t`` on a configuration with one subnet that includes ``hosts``."""
    (directory / "kvm-vdi-hosts.conf").write_text(hosts)
    config = directory / "dhcpd.conf"
    config.write_text(
        "authoritative;\n"
        "subnet 10.98.0.0 netmask 255.255.255.0 { range 10.98.0.100 10.98.0.200; }\n"
        f'include "{directory / "kvm-vdi-hosts.conf"}";\n'
    )
    return subprocess.run(
        [DHCPD, "-t", "-cf", str(config), "-lf", str(directory / "leases")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_dhcp_export_passes_dhcpds_own_syntax_check(vm_world: VmWorld, tmp_path: Path) -> None:
    admin = await vm_world.admin()
    # Names as the dashboard allows them: digits first, dashes, and an underscore first
    # (which dhcpd does not take as a declaration name).
    names = [vm_world.name("desk-01"), f"_{vm_world.tag}lead", f"9{vm_world.tag}digits"]
    untagged: list[dict[str, str]] = []
    try:
        for name in names:
            response = await admin.post(
                "/api/v1/admin/vms",
                json={"name": name, "hypervisor_id": vm_world.h0.id, "disk_size_gib": 1, "network": "br0"},
            )
            assert response.status_code == 201, response.text
            untagged += [vm for vm in response.json()["vms"] if not vm["name"].startswith(vm_world.tag)]
        exported = await admin.get("/vms/dhcp.conf")
        assert exported.status_code == 200
        for name in names:
            assert f'option host-name "{name}";' in exported.text

        checked = dhcpd_check(tmp_path, exported.text)
        assert checked.returncode == 0, checked.stderr

        # The check is a real one: a stanza dhcpd cannot read is refused.
        broken = dhcpd_check(tmp_path, exported.text.replace("hardware ethernet", "hardware ethernt", 1))
        assert broken.returncode != 0 and "hardware" in broken.stderr, broken.stderr
    finally:
        # The world's clean-up removes what starts with its tag; these do not.
        for vm in untagged:
            vm_world.h0.host.virsh("undefine", "--nvram", vm["name"], check=False)
            Path(vm["disk_path"]).unlink(missing_ok=True)
