"""Settings: one TOML file, KVMVDI_* environment overrides, every key documented, secrets never shown."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from app.settings import Settings, effective_settings, load_settings
from tests.dashboard import REPO, DashboardFactory

EXAMPLE = REPO / "config.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def _documented_keys(text: str) -> set[str]:
    """Keys set in the example, or shown commented out (optional ones such as secrets)."""
    keys, table = set(), ""
    for line in text.splitlines():
        if match := re.fullmatch(r"\[(\w+)\]", line.strip()):
            table = match.group(1) + "."
        elif match := re.match(r"#? ?(\w+) = ", line):
            keys.add(table + match.group(1))
    return keys


def test_the_example_documents_every_setting() -> None:
    missing = set(_keys(Settings)) - _documented_keys(EXAMPLE.read_text())
    assert not missing, f"config.example.toml lacks {sorted(missing)}"


def test_the_example_is_valid_and_states_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("KVMVDI_")]:
        monkeypatch.delenv(name)
    tomllib.loads(EXAMPLE.read_text())
    assert load_settings(EXAMPLE).model_dump() == Settings().model_dump()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'database_url = "sqlite:///from-file.sqlite3"\n[server]\nport = 9000\nhost = "10.0.0.5"\n'
    )
    monkeypatch.setenv("KVMVDI_DATABASE_URL", "mysql://vdi:pw@db.example.org/vdi")
    monkeypatch.setenv("KVMVDI_SERVER__PORT", "9443")
    settings = load_settings(config)
    assert settings.database_url.get_secret_value() == "mysql://vdi:pw@db.example.org/vdi"
    assert settings.server.port == 9443
    assert settings.server.host == "10.0.0.5"


def test_the_default_database_is_sqlite_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVMVDI_DATABASE_URL", raising=False)
    assert Settings().database_url.get_secret_value() == "sqlite:///var/kvmvdi.sqlite3"


def test_a_misspelt_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server]\nprot = 9000\n")
    with pytest.raises(ValidationError, match=r"server\.prot"):
        load_settings(config)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_masked_for_display() -> None:
    settings = Settings.model_validate(
        {
            "database_url": "mysql://vdi:db-secret-pw@db/vdi",
            "security": {"session_secret": "session-secret-value"},
            "directory": {"bind_password": "bind-secret-pw"},
        }
    )
    shown = repr(effective_settings(settings)) + repr(settings) + str(settings)
    for secret in ["db-secret-pw", "session-secret-value", "bind-secret-pw"]:
        assert secret not in shown
    assert effective_settings(settings)["database_url"] == "mysql://vdi:***@db/vdi"


async def test_the_settings_page_shows_the_configuration_without_secrets(
    dashboard_factory: DashboardFactory,
) -> None:
    running = await dashboard_factory(directory={"bind_password": "bind-secret-pw"})
    admin = await running.admin()
    page = (await admin.get("/settings")).text
    assert "session_max_age" in page and "28800" in page
    assert running.settings.security.session_secret is not None
    assert running.settings.security.session_secret.get_secret_value() not in page
    assert "bind-secret-pw" not in page
    assert running.services.ssh_key.public_line in page, "the dashboard's public key is shown"
