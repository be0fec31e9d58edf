"""Parsing the launcher's TOML configuration: defaults, errors naming their key, the kiosk password."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from kvm_vdi_client.config import ConfigError, load_config, parse_config, read_kiosk_password

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "thin_client" / "kvm-vdi-client.example.toml"


def parse(text: str, base: Path = Path("/")) -> Any:
    return parse_config(tomllib.loads(text), base=base)


def error_of(text: str, base: Path = Path("/")) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, base)
    return str(caught.value)


def test_the_documented_example_is_a_valid_configuration(tmp_path: Path) -> None:
    # The example points at /etc/kvm-vdi-client/ca.pem; check it with a CA file that exists here.
    text = EXAMPLE.read_text().replace("/etc/kvm-vdi-client/ca.pem", str(tmp_path / "ca.pem"))
    (tmp_path / "ca.pem").write_text("placeholder")
    config = parse(text)
    assert config.dashboard.url == "https://vdi.example.org"
    assert config.dashboard.verify is True
    assert config.viewer.hotkeys == {"toggle-fullscreen": "shift+f11", "release-cursor": "shift+f12"}
    assert config.booting.max_attempts == 60
    assert not config.kiosk.auto_login


def test_only_the_dashboard_url_is_required_and_defaults_are_safe() -> None:
    config = parse('[dashboard]\nurl = "https://vdi.example.org/"\n')
    assert config.dashboard.url == "https://vdi.example.org"
    assert config.dashboard.verify is True
    assert config.dashboard.ca_file is None
    assert config.dashboard.realm is None, "no realm: the dashboard's rule decides"
    assert config.viewer.kiosk is True
    assert config.viewer.usb_redirect is True
    assert config.kiosk.username is None and config.kiosk.restart is False
    assert config.logging.target == "stderr"
    assert config.booting.max_attempts > 0 and config.booting.max_wait > 0


def test_pinned_rdp_certificates_are_read_as_xfreerdp_compares_them() -> None:
    config = parse(f'[dashboard]\nurl = "https://x"\n[viewer]\nrdp_certificates = ["{"AB" * 32}"]\n')
    assert config.viewer.rdp_certificates == (":".join(["ab"] * 32),)
    assert parse('[dashboard]\nurl = "https://x"\n').viewer.rdp_certificates == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "dashboard.url: missing (required)"),
        ('[dashboard]\nurl = "ftp://x"\n', "dashboard.url: expected https://HOST"),
        ('[dashboard]\nurl = "https://user:pw@x"\n', "dashboard.url: must not contain credentials"),
        ('[dashboard]\nurl = "https://x"\nverify = "no"\n', "dashboard.verify: expected true or false"),
        ('[dashboard]\nurl = "https://x"\ntimeout = 0\n', "dashboard.timeout: must be between 1 and 300"),
        (
            '[dashboard]\nurl = "https://x"\nca_file = "/nonexistent/ca.pem"\n',
            "dashboard.ca_file: /nonexistent",
        ),
        ('[dashboard]\nurl = "https://x"\nverfy = false\n', "dashboard.verfy: unknown key"),
        ('[dashboard]\nurl = "https://x"\nrealm = "ldap"\n', "dashboard.realm: must be one of"),
        ('[dashboard]\nurl = "https://x"\n[viewr]\n', "viewr: unknown key"),
        (
            '[dashboard]\nurl = "https://x"\n[viewer]\nusb_redirect = "yes"\n',
            "viewer.usb_redirect: expected true",
        ),
        ('[dashboard]\nurl = "https://x"\n[viewer]\nkiosk = 1\n', "viewer.kiosk: expected true or false"),
        ('[dashboard]\nurl = "https://x"\n[viewer]\nrdp_args = ["/p:secret"]\n', "viewer.rdp_args: must not"),
        ('[dashboard]\nurl = "https://x"\n[viewer]\nrdp_args = "/f"\n', "viewer.rdp_args: expected a list"),
        (
            '[dashboard]\nurl = "https://x"\n[viewer]\nrdp_certificates = ["ab:cd"]\n',
            "viewer.rdp_certificates: expected a SHA-256 fingerprint",
        ),
        (
            '[dashboard]\nurl = "https://x"\n[viewer.hotkeys]\nself-destruct = "f1"\n',
            "viewer.hotkeys.self-destruct: unknown action",
        ),
        (
            '[dashboard]\nurl = "https://x"\n[viewer.hotkeys]\nzoom-in = "f1\\nproxy=http://evil"\n',
            "viewer.hotkeys.zoom-in: expected keys",
        ),
        ('[dashboard]\nurl = "https://x"\n[kiosk]\nusername = "k"\n', "kiosk.password_file: required"),
        ('[dashboard]\nurl = "https://x"\n[kiosk]\npassword_file = "/k"\n', "kiosk.username: required"),
        ('[dashboard]\nurl = "https://x"\n[kiosk]\nrestart_delay = -1\n', "kiosk.restart_delay: must be"),
        (
            '[dashboard]\nurl = "https://x"\n[booting]\nmax_attempts = 2.5\n',
            "booting.max_attempts: expected a whole",
        ),
        ('[dashboard]\nurl = "https://x"\n[booting]\nmax_wait = 0\n', "booting.max_wait: must be between"),
        ('[dashboard]\nurl = "https://x"\n[logging]\ntarget = "file"\n', "logging.file: required"),
        ('[dashboard]\nurl = "https://x"\n[logging]\nlevel = "loud"\n', "logging.level: must be one of"),
        ('[dashboard]\nurl = "https://x"\n[ui]\ntitle = ""\n', "ui.title: expected a non-empty string"),
    ],
)
def test_each_mistake_is_reported_with_the_key_to_fix(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_a_realm_can_be_named_for_the_rare_user_who_needs_one() -> None:
    config = parse('[dashboard]\nurl = "https://vdi.example.org"\nrealm = "Directory"\n')
    assert config.dashboard.realm == "directory"


def test_relative_paths_resolve_next_to_the_configuration_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("placeholder")
    path = tmp_path / "config.toml"
    path.write_text(
        '[dashboard]\nurl = "https://x"\nca_file = "ca.pem"\n[logging]\ntarget = "file"\nfile = "l.log"\n'
    )
    config = load_config(path)
    assert config.dashboard.ca_file == tmp_path / "ca.pem"
    assert config.logging.file == tmp_path / "l.log"


def test_a_missing_or_broken_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[dashboard\nurl=")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[dashboard]\nurl = "https://x"\nverify = "off"\n')
    with pytest.raises(ConfigError, match=r"wrong\.toml: dashboard\.verify"):
        load_config(wrong)


def write_secret(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_the_kiosk_password_file_is_read_when_only_its_owner_can_read_it(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "kiosk.password", "kiosk-pw\n", 0o600)
    assert read_kiosk_password(path) == "kiosk-pw"
    os.chmod(path, 0o400)
    assert read_kiosk_password(path) == "kiosk-pw"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_a_kiosk_password_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_secret(tmp_path / "kiosk.password", "kiosk-pw", mode)
    with pytest.raises(ConfigError) as caught:
        read_kiosk_password(path)
    message = str(caught.value)
    assert message.startswith("kiosk.password_file:")
    assert f"{mode:04o}" in message and "chmod 600" in message
    assert "kiosk-pw" not in message


def test_a_kiosk_password_file_that_is_a_symlink_empty_or_missing_is_refused(tmp_path: Path) -> None:
    target = write_secret(tmp_path / "real", "kiosk-pw", 0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=r"kiosk\.password_file"):
        read_kiosk_password(link)
    empty = write_secret(tmp_path / "empty", "\n", 0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_kiosk_password(empty)
    with pytest.raises(ConfigError, match="does not exist"):
        read_kiosk_password(tmp_path / "missing")
