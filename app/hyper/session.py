"""One live connection to a hypervisor: libvirt for the API, a command runner for files.

:func:`open_session` either returns a working :class:`Session` or raises
:class:`ConnectFailure` with a stable reason code and a message for the admin.
The same classification serves the admin's "check" (:mod:`app.hyper.probe`) and
the reconnect loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncssh
import libvirt

from app.hyper.commands import CommandRunner, LocalCommands, SSHCommands
from app.hyper.connection import LibvirtConnection, libvirt_message
from app.hyper.disks import DiskOperations
from app.hyper.records import HypervisorRecord
from app.hyper.sshkeys import (
    DashboardKey,
    KnownHostsFile,
    fetch_host_key,
    fingerprint,
    host_key_algorithms,
    pinned_known_hosts,
)
from app.i18n.messages import M_, Message

log = logging.getLogger("kvmvdi.hyper.session")

# Reason codes, stable for the UI and the JSON API.
AUTH_REFUSED = "auth_refused"
HOST_KEY_MISMATCH = "host_key_mismatch"
HOST_KEY_UNCONFIRMED = "host_key_unconfirmed"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
LIBVIRT_UNAVAILABLE = "libvirt_unavailable"
MISCONFIGURED = "misconfigured"


class ConnectFailure(Exception):
    """Why a connection failed: a code and a note (kept to be shown in each admin's language)."""

    def __init__(self, code: str, message: str | Message) -> None:
        super().__init__(message if isinstance(message, str) else message.english())
        self.code = code
        self.note = message

    @property
    def message(self) -> str:
        """The note in the current language."""
        return str(self.note)


@dataclass(frozen=True)
class HypervisorFacts:
    libvirt_version: str
    hypervisor_version: str
    hostname: str
    cpus: int
    memory_mib: int


class _WatchedClient(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.reason = ""

    def connection_lost(self, exc: Exception | None) -> None:
        self.reason = f"SSH connection lost: {exc}" if exc else "SSH connection closed"
        self.lost.set()


class Session:
    def __init__(
        self,
        record: HypervisorRecord,
        libvirt_conn: LibvirtConnection,
        runner: CommandRunner,
        ssh_client: _WatchedClient | None,
    ) -> None:
        self.record = record
        self.libvirt = libvirt_conn
        self.runner = runner
        self.disks = DiskOperations(runner, record.dirs)
        self._ssh_client = ssh_client

    async def wait_lost(self) -> str:
        """Return (with the reason) when libvirt or the SSH connection goes away."""
        waiters = [asyncio.ensure_future(self.libvirt.lost.wait())]
        if self._ssh_client is not None:
            waiters.append(asyncio.ensure_future(self._ssh_client.lost.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self.libvirt.lost.is_set():
            return self.libvirt.lost_reason
        assert self._ssh_client is not None
        return self._ssh_client.reason

    async def facts(self) -> HypervisorFacts:
        def read(conn: libvirt.virConnect) -> HypervisorFacts:
            _model, memory_mib, cpus, *_rest = conn.getInfo()
            try:
                hv_version = _version(conn.getVersion())
            except libvirt.libvirtError:
                hv_version = ""
            return HypervisorFacts(
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor_version=hv_version,
                hostname=conn.getHostname(),
                cpus=int(cpus),
                memory_mib=int(memory_mib),
            )

        return await self.libvirt.call(read)

    async def close(self, *, lost: bool = False) -> None:
        """Close both connections; a ``lost`` session drops its SSH transport without a goodbye."""
        await asyncio.gather(self.libvirt.close(), self.runner.close(abort=lost))


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


async def open_session(
    record: HypervisorRecord,
    key: DashboardKey,
    known_hosts: KnownHostsFile,
    *,
    connect_timeout: float = 10.0,
    keepalive: tuple[int, int] = (5, 3),
    threads: int = 4,
) -> Session:
    if reason := record.not_connectable_reason():
        code = HOST_KEY_UNCONFIRMED if "host key" in reason.msgid else MISCONFIGURED
        raise ConnectFailure(code, reason)
    runner: CommandRunner
    client: _WatchedClient | None = None
    if record.is_ssh:
        connection, client = await _ssh_connect(record, key, connect_timeout, keepalive)
        runner = SSHCommands(connection)
    else:
        runner = LocalCommands()
    uri = record.libvirt_uri_for(key, known_hosts)
    libvirt_conn = LibvirtConnection(uri, record.name, threads=threads)
    try:
        await libvirt_conn.open(connect_timeout)
    except BaseException as exc:
        await libvirt_conn.close()
        await runner.close()
        if isinstance(exc, TimeoutError):
            raise ConnectFailure(
                TIMEOUT,
                M_(
                    "libvirt did not answer within {connect_timeout:g} s",
                    connect_timeout=float(connect_timeout),
                ),
            ) from None
        if isinstance(exc, libvirt.libvirtError):
            raise _libvirt_failure(record, exc) from None
        raise
    return Session(record, libvirt_conn, runner, client)


async def _ssh_connect(
    record: HypervisorRecord,
    key: DashboardKey,
    timeout: float,  # noqa: ASYNC109 -- asyncssh's connect and login timeouts
    keepalive: tuple[int, int],
) -> tuple[asyncssh.SSHClientConnection, _WatchedClient]:
    assert record.host_key is not None
    where = f"{record.ssh_user}@{record.address}:{record.ssh_port}"
    client = _WatchedClient()
    try:
        connection, _client = await asyncio.wait_for(
            asyncssh.create_connection(
                lambda: client,
                record.address,
                port=record.ssh_port,
                username=record.ssh_user,
                client_keys=[key.load()],
                known_hosts=pinned_known_hosts(record.host_key),
                server_host_key_algs=host_key_algorithms(record.host_key),
                # Nothing from the dashboard user's own ssh set-up: no agent, no config file.
                agent_path=None,
                config=None,
                connect_timeout=timeout,
                login_timeout=timeout,
                keepalive_interval=keepalive[0],
                keepalive_count_max=keepalive[1],
            ),
            timeout + 1,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise await _host_key_mismatch(record) from None
    except asyncssh.PermissionDenied:
        raise ConnectFailure(
            AUTH_REFUSED,
            M_(
                "{where} refused the dashboard's SSH key: add it to ~{ssh_user}/.ssh/authorized_keys on the hypervisor (hypervisors/install.sh --dashboard-key does it)",  # noqa: E501
                where=where,
                ssh_user=record.ssh_user,
            ),
        ) from None
    except (TimeoutError, asyncssh.ConnectionLost) as exc:
        raise ConnectFailure(
            TIMEOUT, M_("{where} did not answer in time ({value})", where=where, value=str(exc or "timeout"))
        ) from None
    except asyncssh.Error as exc:
        raise ConnectFailure(
            UNREACHABLE, M_("SSH to {where} failed: {reason}", where=where, reason=str(exc.reason))
        ) from None
    except OSError as exc:
        raise ConnectFailure(
            UNREACHABLE, M_("cannot reach {where}: {value}", where=where, value=str(exc.strerror or exc))
        ) from None
    return connection, client


async def _host_key_mismatch(record: HypervisorRecord) -> ConnectFailure:
    assert record.host_key is not None
    expected = fingerprint(record.host_key)
    presented = "unknown"
    with contextlib.suppress(Exception):
        line = await fetch_host_key(
            record.address, record.ssh_port, timeout=5, algorithms=host_key_algorithms(record.host_key)
        )
        presented = fingerprint(line)
    return ConnectFailure(
        HOST_KEY_MISMATCH,
        M_(
            "the SSH host key of {address}:{ssh_port} does not match the pinned one: expected {expected}, presented {presented}. If the hypervisor was reinstalled, fetch and confirm its new key; otherwise someone may be intercepting the connection",  # noqa: E501
            address=record.address,
            ssh_port=str(record.ssh_port),
            expected=expected,
            presented=presented,
        ),
    )


def _libvirt_failure(record: HypervisorRecord, exc: libvirt.libvirtError) -> ConnectFailure:
    message = libvirt_message(exc)
    lowered = message.lower()
    if "host key verification failed" in lowered:
        return ConnectFailure(
            HOST_KEY_MISMATCH,
            M_(
                "libvirt's ssh refused the host key of {address}:{ssh_port}: {message}",
                address=record.address,
                ssh_port=str(record.ssh_port),
                message=message,
            ),
        )
    if "permission denied (publickey" in lowered:
        return ConnectFailure(AUTH_REFUSED, M_("libvirt's ssh login was refused: {message}", message=message))
    if "connection timed out" in lowered:
        return ConnectFailure(TIMEOUT, message)
    if record.is_ssh:
        note = M_("libvirt is not available on {address}: {message}", address=record.address, message=message)
    else:
        note = M_(
            "libvirt is not available at {uri}: {message}",
            uri=record.libvirt_uri_for_display(),
            message=message,
        )
    return ConnectFailure(LIBVIRT_UNAVAILABLE, note)
