"""Which language a request gets."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from app.i18n import use_language
from app.i18n.formatting import format_datetime, format_number, format_size
from app.i18n.negotiation import choose_language, command_language, parse_accept_language

AVAILABLE = ("en", "lt")


def test_accept_language_is_read_by_quality() -> None:
    assert parse_accept_language("en;q=0.5, lt-LT, de;q=0.9, fr;q=0") == ["lt-lt", "de", "en"]
    assert parse_accept_language("") == []
    assert parse_accept_language("lt;q=bogus, en") == ["en"]


def test_a_choice_beats_the_browser_and_the_browser_beats_the_default() -> None:
    assert choose_language(chosen="lt", accept_language="en", default="en", available=AVAILABLE) == "lt"
    assert (
        choose_language(chosen=None, accept_language="lt-LT,en;q=0.8", default="en", available=AVAILABLE)
        == "lt"
    )
    assert (
        choose_language(chosen=None, accept_language="de, lt;q=0.3", default="en", available=AVAILABLE)
        == "lt"
    )
    assert choose_language(chosen=None, accept_language="de", default="lt", available=AVAILABLE) == "lt"
    assert choose_language(chosen="xx", accept_language="", default="en", available=AVAILABLE) == "en"


def test_numbers_sizes_and_dates_are_written_as_the_language_writes_them() -> None:
    moment = datetime(2026, 12, 4, 18, 5, 9)
    with use_language("lt"):
        assert format_number(1234567.5) == "1\N{NO-BREAK SPACE}234\N{NO-BREAK SPACE}567,5"
        assert format_size(1536, "MiB") == "1,5 GiB"
        assert format_datetime(moment) == "2026-12-04 18:05:09 UTC"
    with use_language("en"):
        assert format_number(1234567.5) == "1,234,567.5"
        assert format_size(1536, "MiB") == "1.5 GiB"
        assert format_datetime(moment) == "Dec 4, 2026, 6:05:09\N{NARROW NO-BREAK SPACE}PM UTC"


def test_the_command_line_follows_the_environment_language() -> None:
    assert command_language("en", {"LANG": "lt_LT.UTF-8"}) == "lt"
    assert command_language("en", {"LANGUAGE": "de:lt", "LANG": "en_US.UTF-8"}) == "lt"
    assert command_language("lt", {"LC_ALL": "C"}) == "lt"
    assert command_language("en", {"LANG": "fr_FR.UTF-8"}) == "en"
    assert command_language("lt", {}) == "lt"


@pytest.mark.slow  # kvm-vdi subprocesses
def test_kvm_vdi_says_its_errors_in_the_environment_language(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    answer = subprocess.run(
        [sys.executable, "-m", "app", "--config", str(missing), "db", "upgrade"],
        capture_output=True,
        text=True,
        env={**os.environ, "LANG": "lt_LT.UTF-8", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""},
        timeout=120,
        check=False,
    )
    assert answer.returncode == 2
    assert answer.stderr.strip() == f"kvm-vdi: netinkama konfigūracija: konfigūracijos failo {missing} nėra"


def test_kvm_vdi_help_is_in_the_environment_language() -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "app", "admin", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "LANG": "lt_LT.UTF-8", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""},
        timeout=120,
        check=False,
    )
    assert answer.returncode == 0
    assert "sukurti administratorių" in answer.stdout
    assert "nustatyti vietinio naudotojo slaptažodį" in answer.stdout
    assert "create an administrator" not in answer.stdout
