"""What the broker JSON API answers, as typed values.

Parsing is strict: an answer missing a field the launcher needs becomes a
:class:`ProtocolError` naming the field instead of a KeyError deep in the UI.
Secrets (SPICE password, console-ticket proxy URL) are excluded from ``repr`` so
they cannot leak into a log line by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvm_vdi_client.i18n import gettext as _


class ProtocolError(ValueError):
    """The dashboard answered something that does not follow the broker API contract."""


def missing(name: str) -> ProtocolError:
    """``name`` (a dotted field of the answer) is missing or not what the API says."""
    return ProtocolError(
        _("unexpected answer from the dashboard: {field} missing or invalid").format(field=name)
    )


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(name) if isinstance(data, Mapping) else None
    if value is None or not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise missing(f"{where}.{name}")
    return value


def _optional(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if data.get(name) is None:
        return None
    return _field(data, name, kind, where)


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    source: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> User:
        username = _field(data, "username", str, "user")
        return cls(
            username=username,
            display_name=_optional(data, "display_name", str, "user") or username,
            source=_optional(data, "source", str, "user") or "local",
        )


@dataclass(frozen=True)
class Desktop:
    vm_id: int
    name: str
    state: str

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str = "desktop") -> Desktop:
        return cls(
            vm_id=_field(data, "vm_id", int, where),
            name=_field(data, "name", str, where),
            state=_optional(data, "state", str, where) or "unknown",
        )


@dataclass(frozen=True)
class RdpFailover:
    host: str
    domain: str | None = None
    protocol: str = "rdp"


@dataclass(frozen=True)
class HorizonFailover:
    server: str
    pool: str | None = None
    protocol: str = "horizon"


Failover = RdpFailover | HorizonFailover


def parse_failover(data: Any, where: str = "failover") -> Failover:
    if not isinstance(data, Mapping):
        raise missing(where)
    protocol = _field(data, "protocol", str, where)
    if protocol == "rdp":
        return RdpFailover(
            host=_field(data, "host", str, where), domain=_optional(data, "domain", str, where)
        )
    if protocol == "horizon":
        return HorizonFailover(
            server=_field(data, "server", str, where), pool=_optional(data, "pool", str, where)
        )
    raise ProtocolError(
        _("unexpected answer from the dashboard: {field} {protocol} is not rdp or horizon").format(
            field=f"{where}.protocol", protocol=repr(protocol)
        )
    )


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    description: str
    size: int
    free: int
    maintenance: bool
    has_failover: bool
    desktop: Desktop | None
    # The dashboard says: right after log-in, open this pool's desktop without a pool choice.
    straight: bool = False

    @classmethod
    def parse(cls, data: Mapping[str, Any], index: int, straight_to: int | None = None) -> Pool:
        where = f"pools[{index}]"
        desktop = data.get("desktop")
        return cls(
            id=_field(data, "id", int, where),
            name=_field(data, "name", str, where),
            description=_optional(data, "description", str, where) or "",
            size=_optional(data, "size", int, where) or 0,
            free=_optional(data, "free", int, where) or 0,
            maintenance=bool(data.get("maintenance")),
            has_failover=data.get("failover") is not None,
            desktop=Desktop.parse(desktop, f"{where}.desktop") if desktop is not None else None,
            straight=straight_to is not None and data.get("id") == straight_to,
        )


def parse_pools(data: Mapping[str, Any]) -> tuple[Pool, ...]:
    pools = data.get("pools") if isinstance(data, Mapping) else None
    if not isinstance(pools, list):
        raise missing("pools")
    # Older dashboards do not say: the launcher shows the pool list then.
    straight_to = _optional(data, "straight_to", int, "answer")
    return tuple(Pool.parse(item, index, straight_to) for index, item in enumerate(pools))


@dataclass(frozen=True)
class Lease:
    id: str
    expires_at: str
    heartbeat_interval: float

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Lease:
        lease_id = _field(data, "id", (int, str), "lease")
        interval = _optional(data, "heartbeat_interval", (int, float), "lease")
        return cls(
            id=str(lease_id),
            expires_at=_optional(data, "expires_at", str, "lease") or "",
            heartbeat_interval=float(interval) if interval else 30.0,
        )


def _port(data: Mapping[str, Any], key: str) -> int | None:
    port = _optional(data, key, int, "connection")
    if port is not None and not 0 < port < 65536:
        raise ProtocolError(
            _("unexpected answer from the dashboard: {field} out of range").format(field=f"connection.{key}")
        )
    return port


@dataclass(frozen=True)
class SpiceConnection:
    host: str
    # The plain port (None: the desktop is reached over TLS only) and the TLS port.
    port: int | None
    password: str = field(repr=False)
    proxy: str | None = field(repr=False)
    title: str
    # SPICE over TLS: the viewer checks qemu's certificate against the dashboard's CA.
    tls_port: int | None = None
    host_subject: str | None = None
    ca: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> SpiceConnection:
        protocol = _optional(data, "protocol", str, "connection") or "spice"
        if protocol != "spice":
            raise ProtocolError(
                _("unexpected answer from the dashboard: {field} {protocol} is not spice").format(
                    field="connection.protocol", protocol=repr(protocol)
                )
            )
        port, tls_port = _port(data, "port"), _port(data, "tls_port")
        if port is None and tls_port is None:
            raise ProtocolError(
                _("unexpected answer from the dashboard: {field} has no port").format(field="connection")
            )
        return cls(
            host=_field(data, "host", str, "connection"),
            port=port,
            password=_field(data, "password", str, "connection"),
            proxy=_optional(data, "proxy", str, "connection"),
            title=_optional(data, "title", str, "connection") or _("Virtual desktop"),
            tls_port=tls_port,
            host_subject=_optional(data, "host_subject", str, "connection"),
            ca=_optional(data, "ca", str, "connection"),
        )


@dataclass(frozen=True)
class DesktopReady:
    lease: Lease
    desktop: Desktop
    connection: SpiceConnection


@dataclass(frozen=True)
class DesktopBooting:
    retry_after: float | None
    desktop: Desktop | None


@dataclass(frozen=True)
class FailoverOffered:
    failover: Failover
    reason: str | None = None


@dataclass(frozen=True)
class DesktopRefused:
    code: str
    message: str


DesktopAnswer = DesktopReady | DesktopBooting | FailoverOffered | DesktopRefused


def parse_desktop_answer(status: int, data: Mapping[str, Any]) -> DesktopAnswer:
    """Interpret ``POST /api/v1/pools/{id}/desktop`` (the caller maps 403 and other errors itself)."""
    if status == 409:
        code = str(data.get("error") or "conflict")
        message = str(data.get("message") or _("No desktop can be given to you right now."))
        if data.get("failover") is not None:
            return FailoverOffered(parse_failover(data["failover"]), reason=message)
        return DesktopRefused(code=code, message=message)
    state = data.get("status")
    if state == "ready":
        return DesktopReady(
            lease=Lease.parse(_field(data, "lease", Mapping, "answer")),
            desktop=Desktop.parse(_field(data, "desktop", Mapping, "answer")),
            connection=SpiceConnection.parse(_field(data, "connection", Mapping, "answer")),
        )
    if state == "booting":
        retry_after = _optional(data, "retry_after", (int, float), "answer")
        desktop = data.get("desktop")
        return DesktopBooting(
            retry_after=float(retry_after) if retry_after is not None else None,
            desktop=Desktop.parse(desktop) if isinstance(desktop, Mapping) else None,
        )
    if state == "failover":
        return FailoverOffered(parse_failover(data.get("failover")))
    raise ProtocolError(
        _("unexpected answer from the dashboard: {field} {value}").format(field="status", value=repr(state))
    )
