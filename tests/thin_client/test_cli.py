"""The ``kvm-vdi-client`` program: --check, and configuration errors shown where a kiosk user looks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.services.xvfb import Xvfb
from tests.waiting import eventually_blocking

PROGRAM = Path(sys.executable).parent / "kvm-vdi-client"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROGRAM), *args], capture_output=True, text=True, env=env, timeout=60)


def test_check_accepts_a_valid_configuration(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[dashboard]\nurl = "https://vdi.example.org"\n')
    result = run("--check", "--config", str(config))
    assert result.returncode == 0
    assert result.stdout.strip() == f"{config}: configuration is valid"


def test_check_names_the_file_and_key_of_a_mistake(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[dashboard]\nurl = "https://vdi.example.org"\n[viewer]\nusb_redirect = "yes"\n')
    result = run("--check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kvm-vdi-client: {config}: viewer.usb_redirect: expected true or false, got 'yes'"
    )


def test_check_refuses_a_kiosk_password_file_others_can_read(tmp_path: Path) -> None:
    secret = tmp_path / "kiosk.password"
    secret.write_text("pw")
    secret.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[dashboard]\nurl = "https://x"\n[kiosk]\nusername = "k"\npassword_file = "{secret}"\n'
    )
    result = run("--check", "--config", str(config))
    assert result.returncode == 2
    assert "kiosk.password_file" in result.stderr and "mode 0644" in result.stderr


def test_a_configuration_error_is_shown_on_the_screen_of_a_kiosk(xvfb: Xvfb, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[dashboard]\n")
    process = subprocess.Popen(
        [str(PROGRAM), "--config", str(config)], env=xvfb.env, stderr=subprocess.PIPE, text=True
    )

    def error_window() -> bool:
        assert process.poll() is None, "the launcher exited instead of showing the error"
        search = ["xdotool", "search", "--name", "Thin client configuration error"]
        return subprocess.run(search, env=xvfb.env, capture_output=True).returncode == 0

    try:
        eventually_blocking(error_window, "the configuration error's window")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "dashboard.url: missing (required)" in stderr
