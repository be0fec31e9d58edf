"""Settings: one TOML file plus ``KVMVDI_*`` environment overrides.

Precedence (highest first): explicit keyword arguments, environment
(``KVMVDI_DATABASE_URL``, ``KVMVDI_CONSOLE__TICKET_TTL`` for nested keys), the
TOML file passed to :func:`load_settings` or named by ``KVMVDI_CONFIG``, defaults.

Secrets are ``SecretStr`` so that printing or logging a settings object never
shows them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ServerSettings(BaseModel):
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


class SecuritySettings(BaseModel):
    session_secret: SecretStr | None = None
    session_max_age: int = 8 * 3600
    login_max_failures: int = 5
    login_failure_window: int = 300
    api_token_ttl: int = 3600


class GatewaySettings(BaseModel):
    """HTTP CONNECT gateway for native SPICE clients (remote-viewer)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 3128
    # Host name/address clients use to reach the gateway (written into .vv files).
    public_host: str | None = None


class ConsoleSettings(BaseModel):
    ticket_ttl: int = 60
    spice_password_validity: int = 120
    idle_timeout: int = 3600
    max_session: int = 12 * 3600
    per_user_limit: int = 16
    global_limit: int = 2000
    # Extra origins allowed to open console websockets (besides the dashboard's own).
    allowed_origins: list[str] = Field(default_factory=list)
    read_size: int = 256 * 1024
    buffer_limit: int = 1024 * 1024


class DirectorySettings(BaseModel):
    """LDAP / Active Directory login. ``kind = "none"`` disables directory login."""

    kind: Literal["none", "ldap", "ad"] = "none"
    url: str = "ldap://127.0.0.1:389"
    start_tls: bool = False
    ca_file: str | None = None
    verify_certificates: bool = True
    base_dn: str = ""
    # AD: users bind as user@domain.
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KVMVDI_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    database_url: SecretStr = SecretStr("sqlite:///var/kvmvdi.sqlite3")
    data_dir: Path = Path("var")
    assets_dir: Path = Path("node_modules")
    log_level: str = "INFO"
    demo: bool = False
    server: ServerSettings = Field(default_factory=ServerSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)

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


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a TOML file (argument or ``KVMVDI_CONFIG``), the environment and overrides."""
    path = config_file or os.environ.get("KVMVDI_CONFIG")
    if not path:
        return Settings(**overrides)

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": Path(path)})

    return FileSettings(**overrides)
