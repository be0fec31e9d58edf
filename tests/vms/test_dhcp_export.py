"""The DHCP export is a file ISC dhcpd itself accepts: ``dhcpd -t`` (its own syntax check)
on a dhcpd.conf that includes it, for VMs of every name the dashboard allows, with the fixed
addresses admins gave them (each address to one VM)."""

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
        listed = (await admin.get("/api/v1/admin/vms")).json()["vms"]
        ids = {vm["name"]: vm["id"] for vm in listed if vm["name"] in names}
        fixed = {names[0]: "10.98.0.11", names[1]: "10.98.0.12", names[2]: "10.98.0.13"}
        for name in names[:2]:
            given = await admin.post(
                f"/api/v1/admin/vms/{ids[name]}/fixed-address", json={"fixed_address": fixed[name]}
            )
            assert given.status_code == 200 and given.json()["vm"]["fixed_address"] == fixed[name], given.text
        # The page's form, as an admin fills it in.
        form = await admin.post(f"/vms/{ids[names[2]]}/fixed-address", {"fixed_address": " 10.98.0.13 "})
        assert form.status_code == 303, form.text
        # One VM per address; only addresses a desktop can have.
        taken = await admin.post(f"/vms/{ids[names[2]]}/fixed-address", {"fixed_address": fixed[names[0]]})
        assert taken.status_code == 409 and names[0] in taken.text
        for wrong in ("10.98.0.311", "127.0.0.1", "fe80::1"):
            refused = await admin.post(
                f"/api/v1/admin/vms/{ids[names[0]]}/fixed-address", json={"fixed_address": wrong}
            )
            assert refused.status_code == 400 and "fixed_address" in refused.json()["fields"], refused.text

        exported = await admin.get("/vms/dhcp.conf")
        assert exported.status_code == 200
        for name in names:
            stanza = exported.text.split(f'option host-name "{name}";')[0].rsplit("host ", 1)[1]
            assert f"fixed-address {fixed[name]};" in stanza, exported.text

        checked = dhcpd_check(tmp_path, exported.text)
        assert checked.returncode == 0, checked.stderr

        # The check is a real one: a stanza dhcpd cannot read is refused.
        broken = dhcpd_check(tmp_path, exported.text.replace("hardware ethernet", "hardware ethernt", 1))
        assert broken.returncode != 0 and "hardware" in broken.stderr, broken.stderr
        broken = dhcpd_check(
            tmp_path, exported.text.replace("fixed-address 10.98.0.11", "fixed-address 10.98.0.311")
        )
        assert broken.returncode != 0, broken.stderr

        # An address taken back is free for another VM, and gone from the export.
        cleared = await admin.post(
            f"/api/v1/admin/vms/{ids[names[0]]}/fixed-address", json={"fixed_address": None}
        )
        assert cleared.status_code == 200 and cleared.json()["vm"]["fixed_address"] is None
        moved = await admin.post(f"/vms/{ids[names[2]]}/fixed-address", {"fixed_address": fixed[names[0]]})
        assert moved.status_code == 303
        assert "10.98.0.13" not in (await admin.get("/vms/dhcp.conf")).text
    finally:
        # The world's clean-up removes what starts with its tag; these do not.
        for vm in untagged:
            vm_world.h0.host.virsh("undefine", "--nvram", vm["name"], check=False)
            Path(vm["disk_path"]).unlink(missing_ok=True)
