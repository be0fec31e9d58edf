"""Settings: one TOML file plus ``KVMVDI_*`` environment overrides.

Precedence (highest first): explicit keyword arguments, environment
(``KVMVDI_DATABASE_URL``, ``KVMVDI_CONSOLE__TICKET_TTL`` for nested keys), the
TOML file passed to :func:`load_settings` or named by ``KVMVDI_CONFIG``, defaults.

Secrets are ``SecretStr`` so that printing or logging a settings object never
shows them.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.i18n import gettext as _


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


# "info" and "INFO" alike.
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)]


class Section(BaseModel):
    # A misspelt key is an error at start-up, not a setting silently ignored.
    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = 8080
    # Origin(s) under which browsers reach the dashboard, e.g. "https://vdi.example.org".
    # Empty: the request's own Host is the only accepted websocket Origin.
    public_origins: list[str] = Field(default_factory=list)
    # Serve the session cookie with the Secure flag. Turn on behind https.
    https: bool = False
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Trust X-Forwarded-For/-Proto from these proxies (comma list or "*").
    forwarded_allow_ips: str = "127.0.0.1"
    # Limits every request meets (app/server): a body's size and the time it may take
    # to arrive (413 / 408), a request head's size and time (431 / 408), idle keep-alive.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    body_timeout: float = Field(default=30.0, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    header_timeout: float = Field(default=10.0, gt=0)
    # Longer than HTTP clients keep an idle connection for reuse (httpx 5 s, aiohttp 15 s): closed
    # at the same moment, a request already on its way gets a reset instead of an answer.
    keepalive_timeout: int = Field(default=20, ge=1)
    # Open connections (console websockets included: keep it above console.global_limit)
    # beyond which new requests are answered 503.
    max_connections: int = Field(default=4096, ge=16)
    # Live-update websockets (/live) one user may hold open at once (a browser tab each).
    live_per_user_limit: Annotated[int, Field(ge=1)] = 8


class SecuritySettings(Section):
    # Signs session cookies. Empty: generated once and kept in data_dir/session_secret.
    session_secret: SecretStr | None = None
    # A session ends this many seconds after log-in, however active it is.
    session_max_age: int = Field(default=8 * 3600, ge=1)
    # ... and after this many seconds without any request.
    session_idle_timeout: int = Field(default=3600, ge=1)
    # Failed log-ins allowed per user name, and per client address (IPv6: per /64), in the window.
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=100, ge=1)
    login_failure_window: int = Field(default=300, ge=1)
    # Addresses or networks (CIDR) counted by user name only: NAT gateways, proxies that hide clients.
    login_trusted_networks: list[str] = Field(default_factory=list)
    api_token_ttl: int = Field(default=3600, ge=1)
    # Password checks (Argon2) run on these workers ("process" or "thread"), first in Linux's
    # idle scheduling class for up to argon2_idle_seconds (0: never), then reniced by
    # argon2_worker_nice; beyond argon2_queue waiting checks a log-in is refused as busy (503).
    argon2_workers: int = Field(default=1, ge=1, le=64)
    argon2_worker_kind: Literal["thread", "process"] = "thread"
    argon2_worker_nice: int = Field(default=10, ge=0, le=19)
    argon2_idle_seconds: float = Field(default=2.0, ge=0, le=60)
    argon2_queue: int = Field(default=1000, ge=0)
    # Audit rows per minute for failures anyone can cause (failed log-ins ...); the rest is counted.
    audit_unauthenticated_per_minute: int = Field(default=120, ge=1)

    @field_validator("login_trusted_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an address or network (e.g. 192.0.2.7, 10.1.0.0/16)"
                ) from None
        return values


class GatewaySettings(Section):
    """HTTP CONNECT gateway for native SPICE clients (remote-viewer)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 3128
    # Host name/address clients use to reach the gateway (written into .vv files).
    public_host: str | None = None
    # Port clients use, when a load balancer listens on another one than ``port`` (.vv files).
    public_port: int | None = None
    # A client must send its whole CONNECT request head within this time and size.
    header_timeout: float = 10.0
    max_header_bytes: int = 8192
    # CONNECT requests of one client address still being read or checked (not yet a tunnel).
    max_pending_per_address: Annotated[int, Field(ge=1)] = 16


class ConsoleSettings(Section):
    # Seconds a console ticket opens new connections (open ones continue); at most 60.
    ticket_ttl: Annotated[int, Field(ge=1, le=60)] = 60
    spice_password_validity: Annotated[int, Field(ge=1)] = 120
    # A console session with no traffic for idle_timeout seconds, or older than
    # max_session seconds, is closed.
    idle_timeout: Annotated[int, Field(ge=1)] = 3600
    max_session: Annotated[int, Field(ge=1)] = 12 * 3600
    # Concurrent proxied connections (SPICE channels: a console uses 4-8 of them).
    per_user_limit: Annotated[int, Field(ge=1)] = 16
    global_limit: Annotated[int, Field(ge=1)] = 2000
    # Extra origins allowed to open console websockets (besides the dashboard's own).
    allowed_origins: list[str] = Field(default_factory=list)
    # Bytes read from a socket at once; at least 64 KiB.
    read_size: Annotated[int, Field(ge=64 * 1024)] = 256 * 1024
    # Bytes the proxy buffers per direction of one connection before it stops reading.
    buffer_limit: Annotated[int, Field(ge=64 * 1024)] = 1024 * 1024
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    # The dashboard's CA for SPICE over TLS (ca.key + ca.pem); empty: data_dir/ca. Dashboards
    # sharing hypervisors (replicas) must share it.
    ca_dir: Path | None = None


class DirectorySettings(Section):
    """LDAP / Active Directory login. ``kind = "none"`` disables directory login."""

    kind: Literal["none", "ldap", "ad"] = "none"
    url: str = "ldap://127.0.0.1:389"
    start_tls: bool = False
    # ldap:// without StartTLS sends passwords in clear: refused unless this says otherwise.
    allow_cleartext: bool = False
    ca_file: str | None = None
    verify_certificates: bool = True
    base_dn: str = ""
    # AD: a bare account name binds as name@ad_domain; a UPN (name@suffix) as typed.
    ad_domain: str = ""
    # Plain LDAP: bind DN template ("uid={username},ou=people,dc=example,dc=org") or a
    # service-account search with user_filter.
    user_dn_template: str = ""
    bind_dn: str = ""
    bind_password: SecretStr | None = None
    user_filter: str = "(uid={username})"
    # The attribute holding the login name (its spelling becomes the user name in the dashboard).
    username_attribute: str = "uid"
    group_source: Literal["memberOf", "member", "attribute"] = "memberOf"
    group_base_dn: str = ""
    group_attribute: str = "memberOf"
    timeout: int = 5
    # A signed-in directory user's groups (and whether the account still exists and is enabled)
    # are read again with the service account (bind_dn) when the session is used this many
    # seconds after the last reading; 0: only at log-in.
    groups_recheck: int = Field(default=900, ge=0)


class VmSettings(Section):
    """Virtual machine workflows: concurrency, first-boot waits, thumbnails."""

    # VMs booted at once by populate and by mass power actions.
    populate_concurrency: int = 4
    power_concurrency: int = 4
    # Populate: seconds a first boot may take before the VM is shut down (then forced off).
    first_boot_timeout: float = 300.0
    shutdown_grace: float = 60.0
    # Thumbnails of running VMs, refreshed while an admin page is open.
    thumbnail_interval: float = 5.0
    thumbnail_width: int = 160
    thumbnail_concurrency: int = 3
    # "auto": kvm where the hypervisor really runs the VM's machine (UEFI, CPU mode ...
    # are tried), else qemu (TCG); "kvm" or "qemu" forces one.
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    # Seconds between asking running guests' QEMU agents for their OS and IP addresses.
    agent_interval: float = 30.0


class BrokerSettings(Section):
    """Desktop hand-out: the lease reaper and keep-ready."""

    # Seconds between runs of the lease reaper (expired leases, console-held leases) and keep-ready.
    reaper_interval: Annotated[float, Field(gt=0)] = 5.0
    # Seconds between looks at the pools' schedules (a start runs within this of its time).
    schedule_interval: Annotated[float, Field(gt=0)] = 30.0


class MetricsSettings(Section):
    """Prometheus ``/metrics``."""

    # Served on the dashboard's port only with this bearer token (Authorization: Bearer <token>).
    token: SecretStr | None = None
    # A listener of its own for /metrics alone (e.g. a management address); port 0: none.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    # Seconds between event-loop lag samples.
    loop_lag_interval: Annotated[float, Field(gt=0)] = 0.5


class AlertSettings(Section):
    """Alerts (hypervisor down and back, operation failed, pool exhausted, certificate expiry)."""

    # E-mail: recipients (none: no e-mail), sender, and the SMTP server.
    email_to: list[str] = Field(default_factory=list)
    email_from: str = "kvm-vdi@localhost"
    smtp_host: str = "127.0.0.1"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    # "none", "starttls" (upgrade on the plain port) or "tls" (implicit TLS, usually port 465).
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    # Webhook: a JSON POST, signed with HMAC-SHA256 of "<timestamp>.<body>" with this secret.
    webhook_url: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    # Seconds one delivery attempt may take.
    timeout: Annotated[float, Field(gt=0)] = 10.0
    # Alerts about one thing (a hypervisor, a pool ...) at most once per this many seconds.
    rate_limit: Annotated[float, Field(ge=0)] = 600.0
    # Failed deliveries are retried this many times, waiting retry_initial doubling to retry_max.
    retries: Annotated[int, Field(ge=0)] = 5
    retry_initial: Annotated[float, Field(gt=0)] = 2.0
    retry_max: Annotated[float, Field(gt=0)] = 300.0
    # Alerts waiting per channel; more are dropped (and counted) rather than held in memory.
    queue_size: Annotated[int, Field(ge=1)] = 100
    # Certificates (PEM) watched besides the dashboard's TLS certificate.
    certificate_files: list[str] = Field(default_factory=list)
    certificate_warning_days: Annotated[int, Field(ge=1)] = 21
    certificate_check_interval: Annotated[float, Field(gt=0)] = 12 * 3600.0


class HypervisorSettings(Section):
    """How the dashboard talks to and watches hypervisors (seconds unless named otherwise)."""

    connect_timeout: float = 10.0
    # Cheap libvirt round trip on an idle connection, and how long it may take.
    health_interval: float = 5.0
    health_timeout: float = 10.0
    # A hypervisor whose connection is lost and cannot be re-established for this long is
    # marked down (fenced): nothing new is placed or started there until it answers again.
    fence_after: float = 10.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 30.0
    # libvirt keepalive: a probe every interval, the connection dropped after count misses.
    keepalive_interval: int = 5
    keepalive_count: int = 3
    # How long start-up waits for the first connection attempts before serving.
    startup_wait: float = 10.0
    # Default timeout of short commands (qemu-img info, rm, df ...).
    command_timeout: float = 120.0
    # Worker threads per libvirt connection (blocking calls never run on the event loop).
    libvirt_threads: int = 4
    # Free space and host facts are refreshed this often while connected.
    facts_interval: float = 60.0


class AuditSettings(Section):
    """How long the audit log keeps its records."""

    # Records older than this many days are deleted (console sessions and refusals in the usage
    # report with them); 0 keeps them for ever.
    retention_days: Annotated[int, Field(ge=0)] = 365
    # Seconds between purges (old audit records, API tokens expired or revoked a day ago).
    purge_interval: Annotated[float, Field(gt=0)] = 3600.0


class LanguageSettings(Section):
    # The language of a browser or client that asks for none of ours ("en", "lt").
    default_language: str = "en"


class ClusterSettings(Section):
    """Several replicas of the dashboard behind a load balancer (see README, "Several replicas").

    Without ``redis_url`` the dashboard is one process: live hub, console state and
    background duties in its memory, as on a single machine.
    """

    # Redis for what every replica must hear at once: live messages, console revocations,
    # console counts, thumbnails. Set on every replica, e.g. "redis://10.0.0.30:6379/0".
    redis_url: SecretStr | None = None
    # This replica's name, unique in the cluster. Empty: "<host name>:<server.port>".
    replica: str = ""
    # "all": everything; "console": only consoles (websocket and CONNECT gateway) and health.
    role: Literal["all", "console"] = "all"
    # Seconds between a replica's heartbeats in the database (and renewals of the duty lease).
    heartbeat_interval: Annotated[float, Field(gt=0, le=10)] = 1.0
    # A replica not heard of for this long is gone: another one takes over its background
    # duties, and its unfinished operations end "interrupted".
    replica_timeout: Annotated[float, Field(gt=0)] = 5.0
    # On SIGTERM: readiness goes down, and requests are still served this long so that the
    # load balancer notices (HAProxy: at least inter x fall); then consoles are told to
    # reconnect through another replica and the process stops.
    drain_grace: Annotated[float, Field(ge=0)] = 3.0
    # How long a draining replica waits for requests in progress before it stops anyway.
    drain_timeout: Annotated[float, Field(gt=0)] = 20.0

    @property
    def enabled(self) -> bool:
        return self.redis_url is not None and bool(self.redis_url.get_secret_value())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KVMVDI_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    database_url: SecretStr = SecretStr("sqlite:///var/kvmvdi.sqlite3")
    # No request waits longer than this for the database (seconds): past it, or while the
    # database cannot be reached, pages and APIs answer 503 with Retry-After.
    database_timeout: float = Field(default=10.0, gt=0)
    data_dir: Path = Path("var")
    assets_dir: Path = Path("node_modules")
    log_level: LogLevel = "INFO"
    # "text": one readable line per event; "json": one JSON object per line, for log collectors.
    log_format: Literal["text", "json"] = "text"
    # Libraries that narrate routine work (asyncssh, uvicorn, libvirt, database drivers ...).
    library_log_level: LogLevel = "WARNING"
    # One line per HTTP request and websocket (method, path, status, milliseconds, request id).
    access_log: bool = False
    demo: bool = False
    # The time zone of the pools' schedules and of the times the dashboard shows (IANA name).
    time_zone: str = "UTC"
    server: ServerSettings = Field(default_factory=ServerSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    vms: VmSettings = Field(default_factory=VmSettings)
    hypervisors: HypervisorSettings = Field(default_factory=HypervisorSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    i18n: LanguageSettings = Field(default_factory=LanguageSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file (model_config["toml_file"], set by load_settings) ranks below env.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/Vilnius)") from exc
        return value

    def ca_dir(self) -> Path:
        """Where the dashboard's certificate authority for SPICE over TLS lives."""
        return self.console.ca_dir or self.data_dir / "ca"

    def session_secret(self) -> str:
        """The cookie-signing secret: configured, or generated once and kept in data_dir."""
        if self.security.session_secret is not None:
            return self.security.session_secret.get_secret_value()
        path = self.data_dir / "session_secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip()


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for display: secrets masked, the database password hidden."""
    from app.db import safe_url

    data: dict[str, Any] = settings.model_dump(mode="json")
    data["database_url"] = safe_url(settings.database_url.get_secret_value())
    hidden = "(configured, hidden)"
    data["security"]["session_secret"] = (
        hidden if settings.security.session_secret else "(generated, kept in data_dir)"
    )
    if settings.directory.bind_password is not None:
        data["directory"]["bind_password"] = hidden
    if settings.metrics.token is not None:
        data["metrics"]["token"] = hidden
    for key in ("smtp_password", "webhook_url", "webhook_secret"):
        if getattr(settings.alerts, key) is not None:
            data["alerts"][key] = hidden
    if settings.cluster.redis_url is not None:
        data["cluster"]["redis_url"] = safe_redis_url(settings.cluster.redis_url.get_secret_value())
    return data


def safe_redis_url(url: str) -> str:
    """A Redis URL with its password masked, for pages, logs and ``kvm-vdi check``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a TOML file (argument or ``KVMVDI_CONFIG``), the environment and overrides."""
    path = config_file or os.environ.get("KVMVDI_CONFIG")
    if not path:
        return Settings(**overrides)
    toml_file = Path(path)
    if not toml_file.is_file():
        raise FileNotFoundError(
            _("configuration file {toml_file} does not exist").format(toml_file=toml_file)
        )

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": toml_file})

    return FileSettings(**overrides)
