"""The launcher's configuration: one TOML file, parsed into frozen dataclasses.

Every mistake is reported as :class:`ConfigError` naming the file and the
dotted key (``viewer.usb_redirect: expected true or false, got "yes"``), so an
admin editing the file on a thin client knows exactly what to fix. Unknown keys
are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kvm_vdi_client.i18n import N_, available_languages
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.rdp import normalise_fingerprint

DEFAULT_CONFIG_PATH = Path("/etc/kvm-vdi-client/config.toml")

# Hotkey actions remote-viewer accepts in a connection file (remote-viewer(1), "CONNECTION FILE").
VV_HOTKEY_ACTIONS = frozenset(
    {
        "toggle-fullscreen",
        "release-cursor",
        "zoom-in",
        "zoom-out",
        "zoom-reset",
        "smartcard-insert",
        "smartcard-remove",
    }
)
# Which of the dashboard's accounts a log-in names; none (the usual) lets the dashboard decide.
REALMS = ("local", "directory")
LOG_TARGETS = ("stderr", "syslog", "file")
LOG_LEVELS = ("debug", "info", "warning", "error")


# Shown translated unless the configuration names its own title.
DEFAULT_TITLE = N_("Virtual desktop")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class DashboardConfig:
    url: str
    ca_file: Path | None = None
    verify: bool = True
    timeout: float = 10.0
    # "local" or "directory" for the rare user whose name has both; None: the dashboard's rule.
    realm: str | None = None

    @property
    def is_plain_http(self) -> bool:
        return urlsplit(self.url).scheme == "http"


@dataclass(frozen=True)
class KioskConfig:
    username: str | None = None
    password_file: Path | None = None
    pool: str | None = None
    restart: bool = False
    restart_delay: float = 3.0

    @property
    def auto_login(self) -> bool:
        return self.username is not None


@dataclass(frozen=True)
class ViewerConfig:
    kiosk: bool = True
    fullscreen: bool = True
    usb_redirect: bool = True
    hotkeys: Mapping[str, str] = field(
        default_factory=lambda: {"toggle-fullscreen": "shift+f11", "release-cursor": "shift+f12"}
    )
    spice_command: str = "remote-viewer"
    rdp_command: str = "xfreerdp"
    rdp_args: tuple[str, ...] = ()
    # SHA-256 fingerprints of RDP servers' certificates to accept (normalised: "ab:cd:…").
    rdp_certificates: tuple[str, ...] = ()
    horizon_command: str = "vmware-view"


@dataclass(frozen=True)
class BootingConfig:
    """Bounds for waiting on a desktop that is still starting."""

    max_attempts: int = 60
    max_wait: float = 180.0
    default_retry: float = 2.0
    min_retry: float = 0.5
    max_retry: float = 10.0


@dataclass(frozen=True)
class UiConfig:
    fullscreen: bool = True
    title: str = DEFAULT_TITLE
    # "en", "lt"; None: the environment's language (LANG).
    language: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    target: str = "stderr"
    file: Path | None = None
    level: str = "info"


@dataclass(frozen=True)
class ClientConfig:
    dashboard: DashboardConfig
    kiosk: KioskConfig = field(default_factory=KioskConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)
    booting: BootingConfig = field(default_factory=BootingConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


class _Section:
    """Typed reads from one TOML table; remembers which keys were used to catch unknown ones."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _get(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._get(name)
        if value is None:
            if required:
                raise ConfigError(_("{key}: missing (required)").format(key=self.key(name)))
            return default
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                _("{key}: expected a non-empty string, got {value}").format(
                    key=self.key(name), value=repr(value)
                )
            )
        return value.strip()

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(
                _("{key}: expected true or false, got {value}").format(key=self.key(name), value=repr(value))
            )
        return value

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                _("{key}: expected a number, got {value}").format(key=self.key(name), value=repr(value))
            )
        if not minimum <= value <= maximum:
            raise ConfigError(
                _("{key}: must be between {minimum} and {maximum}, got {value}").format(
                    key=self.key(name), minimum=f"{minimum:g}", maximum=f"{maximum:g}", value=repr(value)
                )
            )
        return float(value)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                _("{key}: expected a whole number, got {value}").format(key=self.key(name), value=repr(value))
            )
        if not minimum <= value <= maximum:
            raise ConfigError(
                _("{key}: must be between {minimum} and {maximum}, got {value}").format(
                    key=self.key(name), minimum=str(minimum), maximum=str(maximum), value=repr(value)
                )
            )
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        assert value is not None
        if value.lower() not in choices:
            raise ConfigError(
                _("{key}: must be one of {choices}, got {value}").format(
                    key=self.key(name), choices=", ".join(choices), value=repr(value)
                )
            )
        return value.lower()

    def optional_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        if self._get(name) is None:
            return None
        return self.choice(name, "", choices)

    def path(self, name: str, base: Path) -> Path | None:
        value = self.string(name)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() else base / path

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(
                _("{key}: expected a list of strings, got {value}").format(
                    key=self.key(name), value=repr(value)
                )
            )
        return tuple(value)

    def table(self, name: str) -> Mapping[str, Any] | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(
                _("{key}: expected a table ([{key}]), got {value}").format(
                    key=self.key(name), value=repr(value)
                )
            )
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(_("{key}: unknown key").format(key=self.key(unknown[0])))


def _section(root: _Section, name: str) -> _Section:
    return _Section(root.table(name) or {}, name)


def _dashboard(section: _Section, base: Path) -> DashboardConfig:
    url = section.string("url", required=True)
    assert url is not None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            _("{key}: expected https://HOST[:PORT][/PATH], got {value}").format(
                key="dashboard.url", value=repr(url)
            )
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(
            _("{key}: must not contain credentials, a query or a fragment").format(key="dashboard.url")
        )
    config = DashboardConfig(
        url=url.rstrip("/"),
        ca_file=section.path("ca_file", base),
        verify=section.boolean("verify", True),
        timeout=section.number("timeout", 10.0, minimum=1, maximum=300),
        realm=section.optional_choice("realm", REALMS),
    )
    if config.ca_file is not None and not config.ca_file.is_file():
        raise ConfigError(
            _("{key}: {path} does not exist or is not a file").format(
                key="dashboard.ca_file", path=config.ca_file
            )
        )
    section.reject_unknown()
    return config


def _kiosk(section: _Section, base: Path) -> KioskConfig:
    config = KioskConfig(
        username=section.string("username"),
        password_file=section.path("password_file", base),
        pool=section.string("pool"),
        restart=section.boolean("restart", False),
        restart_delay=section.number("restart_delay", 3.0, minimum=0, maximum=600),
    )
    if config.username is not None and config.password_file is None:
        raise ConfigError(
            _("{key}: required when {other} is set").format(key="kiosk.password_file", other="kiosk.username")
        )
    if config.password_file is not None and config.username is None:
        raise ConfigError(
            _("{key}: required when {other} is set").format(key="kiosk.username", other="kiosk.password_file")
        )
    section.reject_unknown()
    return config


def _hotkeys(section: _Section) -> Mapping[str, str] | None:
    table = section.table("hotkeys")
    if table is None:
        return None
    hotkeys: dict[str, str] = {}
    for action, keys in table.items():
        name = f"viewer.hotkeys.{action}"
        if action not in VV_HOTKEY_ACTIONS:
            raise ConfigError(
                _("{key}: unknown action (one of {actions})").format(
                    key=name, actions=", ".join(sorted(VV_HOTKEY_ACTIONS))
                )
            )
        if not isinstance(keys, str) or not keys or any(ch in keys for ch in "\r\n=,"):
            raise ConfigError(
                _('{key}: expected keys like "shift+f11", got {value}').format(key=name, value=repr(keys))
            )
        hotkeys[action] = keys.lower()
    return hotkeys


def _fingerprints(section: _Section, name: str) -> tuple[str, ...]:
    fingerprints = []
    for item in section.string_list(name):
        try:
            fingerprints.append(normalise_fingerprint(item))
        except ValueError as error:
            raise ConfigError(f"{section.key(name)}: {error}") from None
    return tuple(fingerprints)


def _viewer(section: _Section) -> ViewerConfig:
    defaults = ViewerConfig()
    hotkeys = _hotkeys(section)
    config = ViewerConfig(
        kiosk=section.boolean("kiosk", defaults.kiosk),
        fullscreen=section.boolean("fullscreen", defaults.fullscreen),
        usb_redirect=section.boolean("usb_redirect", defaults.usb_redirect),
        hotkeys=defaults.hotkeys if hotkeys is None else hotkeys,
        spice_command=section.string("spice_command", defaults.spice_command) or defaults.spice_command,
        rdp_command=section.string("rdp_command", defaults.rdp_command) or defaults.rdp_command,
        rdp_args=section.string_list("rdp_args"),
        rdp_certificates=_fingerprints(section, "rdp_certificates"),
        horizon_command=section.string("horizon_command", defaults.horizon_command)
        or defaults.horizon_command,
    )
    for arg in config.rdp_args:
        if arg.lower().startswith(("/p:", "-p:", "/password")):
            raise ConfigError(
                _("{key}: must not carry a password; it is passed on stdin").format(key="viewer.rdp_args")
            )
    section.reject_unknown()
    return config


def _booting(section: _Section) -> BootingConfig:
    config = BootingConfig(
        max_attempts=section.integer("max_attempts", 60, minimum=1, maximum=10_000),
        max_wait=section.number("max_wait", 180.0, minimum=1, maximum=3600),
        default_retry=section.number("default_retry", 2.0, minimum=0.1, maximum=60),
    )
    section.reject_unknown()
    return config


def _ui(section: _Section) -> UiConfig:
    config = UiConfig(
        fullscreen=section.boolean("fullscreen", True),
        title=section.string("title", DEFAULT_TITLE) or DEFAULT_TITLE,
        language=section.optional_choice("language", available_languages()),
    )
    section.reject_unknown()
    return config


def _logging(section: _Section, base: Path) -> LoggingConfig:
    config = LoggingConfig(
        target=section.choice("target", "stderr", LOG_TARGETS),
        file=section.path("file", base),
        level=section.choice("level", "info", LOG_LEVELS),
    )
    if config.target == "file" and config.file is None:
        raise ConfigError(
            _('{key}: required when {other} = "file"').format(key="logging.file", other="logging.target")
        )
    section.reject_unknown()
    return config


def parse_config(data: Mapping[str, Any], *, base: Path = Path("/")) -> ClientConfig:
    """Build a :class:`ClientConfig` from parsed TOML; relative paths resolve against ``base``."""
    root = _Section(data, "")
    config = ClientConfig(
        dashboard=_dashboard(_section(root, "dashboard"), base),
        kiosk=_kiosk(_section(root, "kiosk"), base),
        viewer=_viewer(_section(root, "viewer")),
        booting=_booting(_section(root, "booting")),
        ui=_ui(_section(root, "ui")),
        logging=_logging(_section(root, "logging"), base),
    )
    root.reject_unknown()
    return config


def load_config(path: Path) -> ClientConfig:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(_("{path}: configuration file not found").format(path=path)) from None
    except PermissionError:
        raise ConfigError(_("{path}: not readable by this user").format(path=path)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(_("{path}: not valid TOML: {error}").format(path=path, error=error)) from None
    try:
        return parse_config(data, base=path.parent)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


_KIOSK_FILE_KEY = "kiosk.password_file"


def read_kiosk_password(path: Path) -> str:
    """Read the auto-login password, refusing a file that others could read.

    The file must belong to root or to the user running the launcher (systemd's
    ``LoadCredential=`` hands the service such a copy) and must have no group or
    world permission bits: a password readable by every local account is not a secret.
    """
    try:
        # Open first, then check the opened file: no window between check and use.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ConfigError(_("{key}: {path} does not exist").format(key=_KIOSK_FILE_KEY, path=path)) from None
    except PermissionError:
        raise ConfigError(
            _("{key}: {path} is not readable by this user").format(key=_KIOSK_FILE_KEY, path=path)
        ) from None
    except OSError as error:
        raise ConfigError(f"{_KIOSK_FILE_KEY}: {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(_("{key}: {path} is not a regular file").format(key=_KIOSK_FILE_KEY, path=path))
        if info.st_mode & 0o077:
            raise ConfigError(
                _(
                    "{key}: {path} is readable or writable by group or others (mode {mode}); "
                    "refusing it. Run: chmod 600 {path}"
                ).format(key=_KIOSK_FILE_KEY, path=path, mode=f"{stat.S_IMODE(info.st_mode):04o}")
            )
        if info.st_uid not in (0, os.geteuid()):
            raise ConfigError(
                _("{key}: {path} must belong to root or to this user").format(key=_KIOSK_FILE_KEY, path=path)
            )
        password = file.read(4096).decode("utf-8").rstrip("\r\n")
    if not password:
        raise ConfigError(_("{key}: {path} is empty").format(key=_KIOSK_FILE_KEY, path=path))
    return password
