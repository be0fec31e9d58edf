"""``.vv`` files for remote-viewer."""

from __future__ import annotations

import configparser
from datetime import datetime

import pytest

from app.proxy.service import ConsoleGrant
from app.proxy.vv import Hotkeys, VVValueError, build_vv


def grant(**overrides: object) -> ConsoleGrant:
    values: dict[str, object] = {
        "vm_id": 7,
        "vm_name": "desk-7",
        "user_id": 1,
        "ticket_id": 3,
        "host": "10.0.0.5",
        "port": 5907,
        "proxy_url": "http://ticket:TICKET@vdi.example.org:3128",
        "ticket": "TICKET",
        "password": "s3cret-pw",
        "expires_at": datetime(2030, 1, 1),
        "password_valid_until": datetime(2030, 1, 1),
        "websocket_path": "/console/ws/7",
    }
    values.update(overrides)
    return ConsoleGrant(**values)  # type: ignore[arg-type]


def parse(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return dict(parser["virt-viewer"])


def test_a_vv_file_goes_through_the_gateway_with_password_title_and_hotkeys() -> None:
    fields = parse(build_vv(grant(), title="Desk 7", fullscreen=True))
    assert fields == {
        "type": "spice",
        "host": "10.0.0.5",
        "port": "5907",
        "password": "s3cret-pw",
        "proxy": "http://ticket:TICKET@vdi.example.org:3128",
        "title": "Desk 7",
        "delete-this-file": "1",
        "fullscreen": "1",
        "enable-usbredir": "1",
        "enable-usb-autoshare": "1",
        "release-cursor": "shift+f12",
        "toggle-fullscreen": "shift+f11",
        "secure-attention": "ctrl+alt+end",
    }


def test_usb_redirection_and_hotkeys_can_be_switched_off() -> None:
    fields = parse(
        build_vv(grant(), title="t", usb_redirect=False, hotkeys=Hotkeys(release_cursor="ctrl+alt"))
    )
    assert (fields["enable-usbredir"], fields["enable-usb-autoshare"]) == ("0", "0")
    assert fields["release-cursor"] == "ctrl+alt"
    assert "toggle-fullscreen" in fields
    assert "secure-attention" in fields
    assert "release-cursor" not in parse(build_vv(grant(), title="t", hotkeys=None))


def test_spice_over_tls_adds_the_tls_port_ca_and_subject() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n"
    text = build_vv(grant(tls_port=5908, ca=pem, host_subject="C=XX,O=VDI,CN=hyper-1"), title="t")
    fields = parse(text)
    assert fields["tls-port"] == "5908"
    assert fields["host-subject"] == "C=XX,O=VDI,CN=hyper-1"
    assert fields["ca"] == "-----BEGIN CERTIFICATE-----\\nMIIB\\nAAAA\\n-----END CERTIFICATE-----"


def test_without_tls_there_is_no_tls_port() -> None:
    assert "tls-port" not in parse(build_vv(grant(), title="t"))


@pytest.mark.parametrize("title", ["a\nproxy=http://evil:1", "a\rb", "a\0b"])
def test_a_value_with_a_line_break_cannot_smuggle_keys(title: str) -> None:
    with pytest.raises(VVValueError, match="title"):
        build_vv(grant(), title=title)


def test_the_grant_never_shows_its_secrets_in_repr() -> None:
    text = repr(grant())
    assert "s3cret-pw" not in text
    assert "TICKET" not in text
