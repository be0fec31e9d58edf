"""hypervisors/install.sh on a fresh host: a private copy of this machine's stock /etc
(users, libvirt and systemd configuration) in a mount namespace that sees h0's libvirtd.
The installer creates the service user, directories and key, configures libvirt, changes
nothing when run again, and its ``check`` agrees; then the dashboard connects to that host
as the created user, through an sshd that reads ~/.ssh/authorized_keys with StrictModes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from app.hyper import HypervisorRecord
from app.hyper.sshkeys import DashboardKey
from tests.hyper.conftest import REPO, RegistryFactory
from tests.services import guests
from tests.services.guests import GuestImages
from tests.services.libvirt_host import LibvirtHost
from tests.services.ports import allocate_port, release_port
from tests.services.process import descendants, run, spawn, stop_process, wait_until
from tests.services.rundir import RunDir
from tests.services.sshd import keygen
from tests.waiting import NeverHappened, eventually_blocking

INSTALL = REPO / "hypervisors" / "install.sh"


@dataclass
class FreshHost:
    user: str
    base: Path
    enter: list[str]
    etc: Path
    home: Path
    images: Path
    volatile: Path
    iso: Path
    ssh_port: int = 0
    host_key: str = ""
    sshd: subprocess.Popen[bytes] | None = None

    def options(self, key: DashboardKey | None = None, *, user: str | None = None) -> list[str]:
        opts = [
            "--user", user or self.user, "--home", str(self.home), "--images-dir", str(self.images),
            "--volatile-dir", str(self.volatile), "--iso-dir", str(self.iso), "--no-packages",
        ]  # fmt: skip
        if key is not None:
            opts += ["--dashboard-key", f"{key.public_line} dashboard@test"]
        return opts

    def installer(
        self,
        action: str,
        key: DashboardKey | None = None,
        *,
        user: str | None = None,
        extra: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.enter, "bash", str(INSTALL), action, *self.options(key, user=user), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def inside(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return run([*self.enter, *argv])


@pytest.fixture(scope="module")
def fresh_host(run_dir: RunDir, h0: LibvirtHost) -> Iterator[FreshHost]:
    """h0's libvirtd with this machine's stock libvirt and systemd configuration, no service user yet.

    The service user is created for real (libvirtd must be able to look it up) under a
    name unique to the run, and deleted afterwards.
    """
    base = run_dir.sub("fresh-host")
    etc = base / "etc"
    for sub in ("libvirt", "systemd/system"):
        (etc / sub).mkdir(parents=True)
        run(["cp", "-a", f"/etc/{sub}/.", str(etc / sub)])
    # A fresh host has no SPICE certificate directory yet (h0's own stays untouched).
    (etc / "pki-libvirt-spice").mkdir()
    # polkit's rules directory: narrow mode writes its rules there (the machine's stays untouched).
    (etc / "polkit-rules").mkdir(mode=0o755)
    (etc / "libvirt" / ".kvmvdi-fresh-host").touch()
    holder_script = base / "hold.sh"
    holder_script.write_text(
        "#!/bin/sh\nset -e\n"
        f'mount --bind "{etc / "libvirt"}" /etc/libvirt\n'
        f'mount --bind "{etc / "systemd" / "system"}" /etc/systemd/system\n'
        f'mount --bind "{etc / "pki-libvirt-spice"}" /etc/pki/libvirt-spice\n'
        f'mount --bind "{etc / "polkit-rules"}" /etc/polkit-1/rules.d\n'
        "exec sleep infinity\n"
    )
    holder = spawn(
        [*h0.enter_prefix(), "unshare", "--mount", "--propagation", "private", "sh", str(holder_script)],
        run_id=run_dir.id,
        log_path=base / "holder.out",
    )
    enter = ["nsenter", f"--target={holder.pid}", "--mount", "--net", "--"]
    wait_until(
        lambda: subprocess.run([*enter, "test", "-e", "/etc/libvirt/.kvmvdi-fresh-host"]).returncode == 0,
        what="fresh host namespace",
        timeout=10,
        proc=holder,
        log_path=base / "holder.out",
    )
    home = base / "kvm-vdi"
    user = f"kvmvdi-i{run_dir.id}"
    host = FreshHost(user, base, enter, etc, home, home / "images", home / "volatile", home / "iso")
    try:
        yield host
    finally:
        if host.sshd is not None:
            # Sessions first (they would keep the user busy), then the listener.
            for pid in descendants(host.sshd.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stop_process(host.sshd)
        if host.ssh_port:
            release_port(host.ssh_port)
        stop_process(holder)
        remove_user(user)


def remove_user(user: str, timeout: float = 20) -> None:
    """userdel, waiting out processes of the user that are still being reaped."""
    said = ""

    def removed() -> bool:
        nonlocal said
        result = subprocess.run(["userdel", user], capture_output=True, text=True, check=False)
        said = result.stderr.strip()
        return result.returncode in (0, 6)  # removed, or never created

    try:
        eventually_blocking(removed, f"the test user {user} removed", timeout=timeout, interval=0.2)
    except NeverHappened:
        raise RuntimeError(f"could not remove the test user {user}: {said}") from None


def start_sshd(host: FreshHost, run_dir: RunDir) -> None:
    """An sshd as Debian runs it: keys from ~/.ssh/authorized_keys, StrictModes on."""
    host.ssh_port = allocate_port("127.0.0.1")
    key_path = host.base / "ssh_host_ed25519_key"
    host.host_key = " ".join(keygen(key_path, "fresh-host").split()[:2])
    config = host.base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {host.ssh_port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {key_path}",
                f"PidFile {host.base / 'sshd.pid'}",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                "StrictModes yes",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host.sshd = spawn(
        [*host.enter, "/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(host.base / "sshd.log")],
        run_id=run_dir.id,
        log_path=host.base / "sshd.out",
    )
    wait_until(
        lambda: subprocess.run(["nc", "-z", "127.0.0.1", str(host.ssh_port)], check=False).returncode == 0,
        what="fresh host sshd",
        timeout=20,
        log_path=host.base / "sshd.log",
    )


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes() if path.exists() else b"<none>")
    return h.hexdigest()


def changes(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("changed")]


def missing(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("MISSING")]


def test_check_on_a_fresh_host_says_what_is_missing(fresh_host: FreshHost) -> None:
    never_installed = f"{fresh_host.user}n"
    result = fresh_host.installer("check", user=never_installed)
    assert result.returncode == 1, result.stdout
    assert f"MISSING  service user {never_installed} (run: " in result.stdout
    assert result.stdout.splitlines()[-1] == "result   1 thing(s) missing"


def test_install_sets_up_user_directories_key_and_libvirt_and_is_idempotent(
    fresh_host: FreshHost, dashboard_key: DashboardKey
) -> None:
    user = fresh_host.user
    stock_conf = Path("/etc/libvirt/libvirtd.conf").read_text()
    first = fresh_host.installer("install", dashboard_key)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"changed  created service user {user} (groups libvirt kvm)" in first.stdout
    assert "systemd is not running: restart libvirtd yourself" in first.stdout

    entry = run(["getent", "passwd", user]).stdout.strip()
    assert entry.endswith(f":{fresh_host.home}:/bin/sh")
    group = Path("/etc/group").read_text().splitlines()
    for name in ("libvirt", "kvm"):
        members = next(line for line in group if line.startswith(f"{name}:")).split(":")[3].split(",")
        assert user in members
    shadow = run(["getent", "shadow", user]).stdout.strip()
    assert shadow.split(":")[1] == "*", "key logins allowed, no password"

    paths = [fresh_host.home, fresh_host.images, fresh_host.volatile, fresh_host.iso,
             fresh_host.home / ".ssh", fresh_host.home / ".ssh" / "authorized_keys"]  # fmt: skip
    listing = fresh_host.inside("stat", "-c", "%n %U:%G %a", *map(str, paths)).stdout.split("\n")
    assert listing[:6] == [
        f"{fresh_host.home} {user}:kvm 750",
        f"{fresh_host.images} {user}:kvm 750",
        f"{fresh_host.volatile} {user}:kvm 750",
        f"{fresh_host.iso} {user}:kvm 750",
        f"{fresh_host.home / '.ssh'} {user}:{user} 700",
        f"{fresh_host.home / '.ssh' / 'authorized_keys'} {user}:{user} 600",
    ]
    authorized = (fresh_host.home / ".ssh" / "authorized_keys").read_text().splitlines()
    assert authorized == [f"restrict {dashboard_key.public_line} kvm-vdi-dashboard"]

    conf = fresh_host.etc / "libvirt" / "libvirtd.conf"
    active = [line for line in conf.read_text().splitlines() if line and not line.startswith("#")]
    assert active == ['unix_sock_group = "libvirt"', 'unix_sock_rw_perms = "0770"', 'auth_unix_rw = "none"']
    assert (fresh_host.etc / "libvirt" / "libvirtd.conf.kvm-vdi.orig").read_text() == stock_conf
    dropin = fresh_host.etc / "systemd" / "system" / "libvirtd.socket.d" / "kvm-vdi.conf"
    assert "SocketGroup=libvirt\nSocketMode=0660\n" in dropin.read_text()
    assert not any(user in p.read_text() for p in Path("/etc/sudoers.d").iterdir() if p.is_file())

    watched = [conf, dropin, Path("/etc/passwd"), Path("/etc/group"),
               fresh_host.home / ".ssh" / "authorized_keys"]  # fmt: skip
    before = digest(*watched)
    second = fresh_host.installer("install", dashboard_key)
    assert second.returncode == 0, second.stdout + second.stderr
    assert changes(second.stdout) == []
    assert "done     0 change(s)" in second.stdout
    assert digest(*watched) == before


def test_check_passes_after_install_and_names_what_breaks(
    fresh_host: FreshHost, dashboard_key: DashboardKey
) -> None:
    user = fresh_host.user
    assert fresh_host.installer("install", dashboard_key).returncode == 0
    good = fresh_host.installer("check", dashboard_key)
    assert good.returncode == 0, good.stdout
    assert missing(good.stdout) == []
    assert f"ok       libvirt answers {user} on qemu:///system" in good.stdout
    assert f"ok       /dev/kvm usable by {user}" in good.stdout
    assert "result   everything is in place" in good.stdout

    conf = fresh_host.etc / "libvirt" / "libvirtd.conf"
    conf.write_text(conf.read_text().replace('auth_unix_rw = "none"', 'auth_unix_rw = "polkit"'))
    (fresh_host.home / ".ssh" / "authorized_keys").write_text("")
    broken = fresh_host.installer("check", dashboard_key)
    assert broken.returncode == 1
    assert [line.split(" (")[0] for line in missing(broken.stdout)] == [
        f"MISSING  the dashboard key in {fresh_host.home}/.ssh/authorized_keys",
        'MISSING  /etc/libvirt/libvirtd.conf: auth_unix_rw = "none"',
    ]

    repaired = fresh_host.installer("install", dashboard_key)
    assert len(changes(repaired.stdout)) == 2, repaired.stdout
    assert fresh_host.installer("check", dashboard_key).returncode == 0


def test_an_invalid_dashboard_key_is_refused_before_anything_changes(fresh_host: FreshHost) -> None:
    result = subprocess.run(
        [
            *fresh_host.enter,
            "bash",
            str(INSTALL),
            *fresh_host.options(),
            "--dashboard-key",
            "ssh-ed25519 $(id)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--dashboard-key: not an SSH public key" in result.stderr


async def test_the_dashboard_manages_the_installed_host_as_its_service_user(
    fresh_host: FreshHost,
    run_dir: RunDir,
    dashboard_key: DashboardKey,
    registry_factory: RegistryFactory,
    guest_images: GuestImages,
) -> None:
    user = fresh_host.user
    assert fresh_host.installer("install", dashboard_key).returncode == 0
    start_sshd(fresh_host, run_dir)
    record = HypervisorRecord(
        id=0,
        name="fresh",
        address="127.0.0.1",
        ssh_port=fresh_host.ssh_port,
        ssh_user=user,
        images_dir=str(fresh_host.images),
        volatile_dir=str(fresh_host.volatile),
        iso_dir=str(fresh_host.iso),
        host_key=fresh_host.host_key,
        host_key_confirmed=True,
    )
    harness = await registry_factory([record])
    hv = harness.registry.get(1)
    assert (await hv.run(["id", "-un"])).stdout.strip() == user
    assert hv.images_free_bytes and hv.images_free_bytes > 0
    # Debian's sshd allows 10 sessions per connection; many commands at once still all run.
    results = await asyncio.gather(*(hv.run(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(30)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]

    base = fresh_host.images / "golden.qcow2"
    shutil.copyfile(guest_images.base("banner"), base)
    base.chmod(0o644)
    disk = fresh_host.volatile / "desk.qcow2"
    await hv.create_overlay(str(base), str(disk))
    await hv.define(guests.domain_xml("fresh-desk", disk, virt_type=guests.FAST_VIRT_TYPE))
    try:
        await hv.start("fresh-desk")
        screen = guests.decode_image(await hv.screenshot_png("fresh-desk", max_width=0))
        assert screen.width > 0, "qemu reached the disk in the installer's directories"
    finally:
        await hv.destroy("fresh-desk")
        await hv.undefine("fresh-desk")

    # The key is restricted: commands only, no tunnels through the hypervisor.
    async with asyncssh.connect(
        "127.0.0.1",
        port=fresh_host.ssh_port,
        username=user,
        client_keys=[dashboard_key.load()],
        known_hosts=None,
        config=None,
    ) as conn:
        assert (await conn.run("id -un", check=True)).stdout == f"{user}\n"
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection("127.0.0.1", fresh_host.ssh_port)
        assert refused.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED


def test_user_mode_makes_only_the_user_directories_and_key_and_leaves_libvirt_alone(
    fresh_host: FreshHost, dashboard_key: DashboardKey
) -> None:
    """For a hypervisor whose libvirt is managed already: not one file of libvirt's changes."""
    user = f"{fresh_host.user}u"
    home = fresh_host.base / "managed"
    options = [
        "--user", user, "--home", str(home), "--images-dir", str(home / "images"),
        "--volatile-dir", str(home / "volatile"), "--iso-dir", str(home / "iso"), "--no-packages",
        "--dashboard-key", f"{dashboard_key.public_line} dashboard@test",
    ]  # fmt: skip
    libvirt_files = libvirt_config_files(fresh_host)
    before = digest(*libvirt_files)
    try:
        first = subprocess.run(
            [*fresh_host.enter, "bash", str(INSTALL), "user", *options],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"changed  created service user {user} (groups libvirt kvm)" in first.stdout
        assert "libvirtd, its sockets and qemu.conf" in first.stdout
        listing = fresh_host.inside(
            "stat",
            "-c",
            "%n %U:%G %a",
            str(home),
            str(home / "images"),
            str(home / ".ssh" / "authorized_keys"),
        ).stdout.split("\n")
        assert listing[:3] == [
            f"{home} {user}:kvm 750",
            f"{home / 'images'} {user}:kvm 750",
            f"{home / '.ssh' / 'authorized_keys'} {user}:{user} 600",
        ]
        authorized = (home / ".ssh" / "authorized_keys").read_text().splitlines()
        assert authorized == [f"restrict {dashboard_key.public_line} kvm-vdi-dashboard"]
        assert digest(*libvirt_files) == before, "libvirt's configuration is not touched"
        assert libvirt_config_files(fresh_host) == libvirt_files, "and no file is added to it"
        again = subprocess.run(
            [*fresh_host.enter, "bash", str(INSTALL), "user", *options],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0 and changes(again.stdout) == [], again.stdout
    finally:
        remove_user(user)


def libvirt_config_files(host: FreshHost) -> list[Path]:
    trees = (host.etc / "libvirt", host.etc / "systemd" / "system")
    return sorted(path for tree in trees for path in tree.rglob("*") if path.is_file())


def test_narrow_mode_is_written_reported_by_check_and_undone(
    fresh_host: FreshHost, dashboard_key: DashboardKey
) -> None:
    """h0's libvirtd does not read this host's libvirtd.conf: ``check`` must notice that the
    narrowing is configured but not in force (tests/hyper/test_narrow.py runs it for real)."""
    user = fresh_host.user
    narrow = ["--narrow", "--domain-prefix", "vdi-"]
    installed = fresh_host.installer("install", dashboard_key, extra=narrow)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    rules = fresh_host.etc / "polkit-rules" / "40-kvm-vdi-libvirt.rules"
    assert f'if (subject.user !== "{user}")' in rules.read_text()
    assert 'var prefixes = ["kvmvdi-trial-", "vdi-"];' in rules.read_text()
    conf = fresh_host.etc / "libvirt" / "libvirtd.conf"
    assert 'access_drivers = [ "polkit" ]' in conf.read_text().splitlines()

    checked = fresh_host.installer("check", dashboard_key, extra=narrow)
    assert (
        f"ok       mode narrow: libvirt access control (polkit), {user} on domains vdi-* only"
        in checked.stdout
    )
    assert [line.split(":")[0] for line in missing(checked.stdout)] == [
        f"MISSING  libvirt refuses {user} what the rules do not allow (it listed storage pools)"
    ], checked.stdout
    other_prefix = fresh_host.installer(
        "check", dashboard_key, extra=["--narrow", "--domain-prefix", "desk-"]
    )
    rules_path = "/etc/polkit-1/rules.d/40-kvm-vdi-libvirt.rules"
    assert (
        f"MISSING  {rules_path} as --narrow writes it for {user} and --domain-prefix desk-"
        in other_prefix.stdout
    )

    undone = fresh_host.installer("install", dashboard_key)
    assert undone.returncode == 0
    assert not rules.exists()
    assert 'access_drivers = [ "polkit" ]' not in conf.read_text().splitlines()
    plain = fresh_host.installer("check", dashboard_key)
    assert plain.returncode == 0, plain.stdout
    assert "ok       mode group: members of group libvirt have every libvirt right" in plain.stdout
