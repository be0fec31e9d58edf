"""What the launcher reads from its configuration file and from the dashboard's answers is
reported in the launcher's language; key names, paths and values stay as they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kvm_vdi_client import i18n
from kvm_vdi_client.config import ConfigError, load_config, parse_config
from kvm_vdi_client.model import ProtocolError, parse_desktop_answer, parse_pools


@pytest.fixture
def lithuanian() -> Iterator[None]:
    assert i18n.set_language("lt") == "lt"
    yield
    i18n.set_language("en")


def test_a_configuration_mistake_is_explained_in_lithuanian(lithuanian: None) -> None:
    with pytest.raises(ConfigError) as wrong_type:
        parse_config({"dashboard": {"url": "https://vdi.example", "verify": "yes"}})
    assert str(wrong_type.value) == "dashboard.verify: laukta true arba false, gauta 'yes'"

    with pytest.raises(ConfigError) as unknown:
        parse_config({"dashboard": {"url": "https://vdi.example"}, "viewer": {"kisok": True}})
    assert str(unknown.value) == "viewer.kisok: nežinomas raktas"


def test_a_missing_configuration_file_is_reported_in_lithuanian(lithuanian: None, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as missing:
        load_config(path)
    assert str(missing.value) == f"{path}: konfigūracijos failas nerastas"


def test_an_answer_outside_the_broker_api_is_reported_in_lithuanian(lithuanian: None) -> None:
    with pytest.raises(ProtocolError) as no_pools:
        parse_pools({"pools": None})
    assert str(no_pools.value) == "netikėtas valdymo skydelio atsakymas: pools nėra arba netinkamas"

    with pytest.raises(ProtocolError) as odd_status:
        parse_desktop_answer(200, {"status": "melting"})
    assert str(odd_status.value) == "netikėtas valdymo skydelio atsakymas: status 'melting'"
