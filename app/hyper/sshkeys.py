"""The dashboard's SSH identity and the pinned host keys of hypervisors.

The dashboard has one ed25519 key pair (generated on first start, under
``data_dir/ssh``). Each hypervisor's host key is fetched on first contact,
shown to an admin as a fingerprint, and pinned once confirmed. Every later
connection, asyncssh and libvirt's ``qemu+ssh`` alike, trusts only the pinned
key: libvirt's ssh transport is pointed at an ``ssh`` wrapper that reads the
dashboard's own known_hosts file with StrictHostKeyChecking=yes.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from app.i18n import gettext as _

# Host key algorithms asked for when fetching a new host key, best first.
PREFERRED_HOST_KEY_ALGS = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]


class HostKeyError(Exception):
    """The hypervisor's host key is unknown, unconfirmed or changed."""


@dataclass(frozen=True)
class DashboardKey:
    private_path: Path
    public_line: str

    @property
    def authorized_keys_line(self) -> str:
        return f"{self.public_line} kvm-vdi-dashboard"

    def install_command(self, user: str = "vdi") -> str:
        """The one line an admin runs (as root) on a hypervisor to trust the dashboard.

        ``restrict``: the key may run commands, nothing else (no forwarding, no terminal),
        as ``hypervisors/install.sh --dashboard-key`` authorizes it too.
        """
        line = shlex.quote(f"restrict {self.authorized_keys_line}")
        home = f"~{user}"
        return (
            f"install -d -m 700 -o {user} {home}/.ssh && echo {line} >> {home}/.ssh/authorized_keys"
            f" && chown {user} {home}/.ssh/authorized_keys && chmod 600 {home}/.ssh/authorized_keys"
        )

    def install_script_command(self, user: str = "vdi") -> str:
        """``hypervisors/install.sh`` with this key: prepares a Debian hypervisor and authorizes the key."""
        options = "" if user == "vdi" else f" --user {shlex.quote(user)}"
        return f"./install.sh{options} --dashboard-key {shlex.quote(self.authorized_keys_line)}"

    def load(self) -> asyncssh.SSHKey:
        return asyncssh.read_private_key(str(self.private_path))


def ensure_dashboard_key(ssh_dir: Path) -> DashboardKey:
    """Load the dashboard's key pair, creating it (mode 0600) on first use; the public key is
    written beside it as ``id_ed25519.pub`` (also for a key made by an older version)."""
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path = ssh_dir / "id_ed25519"
    if not private_path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="kvm-vdi-dashboard")
        tmp = private_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key("openssh"))
        os.replace(tmp, private_path)
    key = asyncssh.read_private_key(str(private_path))
    public_line = " ".join(key.export_public_key("openssh").decode().split()[:2])
    _write_public_key(private_path.with_name(private_path.name + ".pub"), public_line)
    return DashboardKey(private_path=private_path, public_line=public_line)


def _write_public_key(path: Path, public_line: str) -> None:
    """``id_ed25519.pub`` beside the private key (created, or corrected, on every start):
    what an admin copies to a hypervisor's authorized_keys."""
    content = f"{public_line} kvm-vdi-dashboard\n"
    if path.exists() and path.read_text() == content:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def parse_host_key(line: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise HostKeyError(_("not an SSH public key: {exc}").format(exc=exc)) from exc


def fingerprint(line: str) -> str:
    """SHA256 fingerprint as OpenSSH prints it (``SHA256:…``)."""
    return str(parse_host_key(line).get_fingerprint("sha256"))


def host_key_line(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


class HostKeyFetchError(HostKeyError):
    """The server could not be asked for its host key (unreachable, refused, timed out)."""


async def fetch_host_key(
    address: str,
    port: int,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 -- part of this helper's API
    algorithms: list[str] | None = None,
) -> str:
    """The host key a server presents now, as an OpenSSH public-key line (not trusted yet).

    ``algorithms`` narrows what the server is asked for (e.g. the family of a pinned key).
    Failing to reach the server raises :class:`HostKeyFetchError` with the reason.
    """
    try:
        async with asyncio.timeout(timeout):
            key = await asyncssh.get_server_host_key(
                address, port, server_host_key_algs=algorithms or PREFERRED_HOST_KEY_ALGS, config=None
            )
    except TimeoutError as exc:
        raise HostKeyFetchError(
            _("{address}:{port} did not answer within {timeout:g} s").format(
                address=address, port=port, timeout=timeout
            )
        ) from exc
    except (OSError, asyncssh.Error) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc) or repr(exc)
        raise HostKeyFetchError(
            _("cannot reach the SSH server at {address}:{port}: {reason}").format(
                address=address, port=port, reason=reason
            )
        ) from exc
    if key is None:
        raise HostKeyFetchError(
            _("{address}:{port} presented no host key").format(address=address, port=port)
        )
    return host_key_line(key)


def known_hosts_entry(address: str, port: int, key_line: str) -> str:
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {key_line.strip()}"


KnownHostsArgument = tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]


def pinned_known_hosts(key_line: str) -> KnownHostsArgument:
    """asyncssh's ``known_hosts`` argument trusting exactly one host key."""
    return [parse_host_key(key_line)], [], []


def host_key_algorithms(key_line: str) -> list[str]:
    """Ask the server for the pinned key's algorithm family, so it presents that key."""
    algorithm = key_line.split()[0]
    if algorithm == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [algorithm]


class KnownHostsFile:
    """The dashboard's own known_hosts file plus the ``ssh`` wrapper libvirt uses.

    Rewritten atomically from the database's pinned keys whenever one changes.
    """

    def __init__(self, ssh_dir: Path) -> None:
        self.ssh_dir = ssh_dir
        self.path = ssh_dir / "known_hosts"
        self.ssh_wrapper = ssh_dir / "ssh-pinned"

    def write(self, entries: list[str]) -> None:
        self.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _atomic_write(self.path, "".join(f"{entry}\n" for entry in entries), 0o600)
        self._write_wrapper()

    def _write_wrapper(self) -> None:
        options = [
            f"UserKnownHostsFile={self.path}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "UpdateHostKeys=no",
            "BatchMode=yes",
            "ConnectTimeout=10",
            # Drop dead hypervisor connections within ~15 s so they can be fenced.
            "ServerAliveInterval=5",
            "ServerAliveCountMax=3",
        ]
        args = " ".join(f"-o {shlex.quote(option)}" for option in options)
        script = (
            "#!/bin/sh\n"
            "# Written by KVM-VDI: ssh for libvirt, trusting only pinned host keys.\n"
            f'exec ssh {args} "$@"\n'
        )
        _atomic_write(self.ssh_wrapper, script, 0o700)


def _atomic_write(path: Path, content: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
