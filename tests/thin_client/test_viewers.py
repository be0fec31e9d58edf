"""The .vv connection file and the viewer command lines: secrets on stdin, never in argv."""

from __future__ import annotations

import configparser
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from kvm_vdi_client.config import ViewerConfig
from kvm_vdi_client.model import HorizonFailover, RdpFailover, SpiceConnection
from kvm_vdi_client.rdp import normalise_fingerprint
from kvm_vdi_client.viewers import (
    ViewerNotInstalled,
    horizon_launch,
    rdp_launch,
    spice_launch,
    start_viewer,
)
from kvm_vdi_client.vv import VvError, build_vv

CONNECTION = SpiceConnection(
    host="10.20.0.7",
    port=5903,
    password="Sp1ce-pass",
    proxy="http://ticket:tkt-0123456789@vdi.example.org:3128",
    title="Office desktop 3",
)


def read_vv(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert parser.sections() == ["virt-viewer"]
    return dict(parser["virt-viewer"])


def test_the_vv_carries_endpoint_password_gateway_proxy_and_viewer_options() -> None:
    vv = build_vv(
        CONNECTION,
        fullscreen=True,
        usb_redirect=True,
        hotkeys={"toggle-fullscreen": "shift+f11", "release-cursor": "shift+f12"},
    )
    assert read_vv(vv) == {
        "type": "spice",
        "host": "10.20.0.7",
        "port": "5903",
        "password": "Sp1ce-pass",
        "proxy": "http://ticket:tkt-0123456789@vdi.example.org:3128",
        "title": "Office desktop 3",
        "fullscreen": "1",
        "enable-usbredir": "1",
        "enable-usb-autoshare": "1",
        "delete-this-file": "1",
        "toggle-fullscreen": "shift+f11",
        "release-cursor": "shift+f12",
    }


def test_the_vv_without_proxy_usb_or_fullscreen() -> None:
    direct = SpiceConnection("127.0.0.1", 5900, "pw", None, "Lab")
    fields = read_vv(build_vv(direct, fullscreen=False, usb_redirect=False, hotkeys={}, title="My title"))
    assert "proxy" not in fields
    assert fields["fullscreen"] == "0"
    assert fields["enable-usbredir"] == "0"
    assert fields["title"] == "My title"


def test_spice_over_tls_adds_the_tls_port_subject_and_the_ca_on_one_line() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n"
    tls = SpiceConnection("10.0.0.9", 5900, "pw", None, "T", tls_port=5901, host_subject="CN=hv1", ca=pem)
    fields = read_vv(build_vv(tls, fullscreen=True, usb_redirect=False, hotkeys={}))
    assert fields["tls-port"] == "5901"
    assert fields["host-subject"] == "CN=hv1"
    assert fields["ca"] == "-----BEGIN CERTIFICATE-----\\nMIIB\\nAAAA\\n-----END CERTIFICATE-----"
    assert "tls-port" not in read_vv(build_vv(CONNECTION, fullscreen=True, usb_redirect=False, hotkeys={}))


@pytest.mark.parametrize("field", ["host", "password", "proxy", "title"])
def test_a_line_break_in_a_field_cannot_inject_keys_into_the_vv(field: str) -> None:
    values = {
        "host": CONNECTION.host,
        "port": CONNECTION.port,
        "password": CONNECTION.password,
        "proxy": CONNECTION.proxy,
        "title": CONNECTION.title,
    }
    values[field] = "x\nproxy=http://attacker:3128"
    with pytest.raises(VvError, match=f"connection.{field} contains a line break"):
        build_vv(SpiceConnection(**values), fullscreen=True, usb_redirect=True, hotkeys={})  # type: ignore[arg-type]


def test_remote_viewer_in_kiosk_mode_reads_the_vv_from_stdin() -> None:
    launch = spice_launch(ViewerConfig(kiosk=True), CONNECTION)
    assert launch.argv == ("remote-viewer", "--kiosk", "--kiosk-quit", "on-disconnect", "-")
    assert read_vv(launch.stdin.decode())["password"] == "Sp1ce-pass"
    assert not any("Sp1ce-pass" in arg or "tkt-0123456789" in arg for arg in launch.argv)
    assert "Sp1ce-pass" not in repr(launch)


def test_remote_viewer_without_kiosk_mode_opens_full_screen_or_windowed() -> None:
    assert spice_launch(ViewerConfig(kiosk=False, fullscreen=True), CONNECTION).argv == (
        "remote-viewer",
        "--full-screen",
        "-",
    )
    windowed = spice_launch(ViewerConfig(kiosk=False, fullscreen=False), CONNECTION)
    assert windowed.argv == ("remote-viewer", "-")
    assert read_vv(windowed.stdin.decode())["fullscreen"] == "0"


def test_xfreerdp_gets_server_domain_and_user_in_argv_and_the_password_on_stdin() -> None:
    config = ViewerConfig(rdp_args=("/cert:tofu",))
    launch = rdp_launch(config, RdpFailover("rdp.example.org", "EXAMPLE"), "alice", "al1ce-pw")
    assert launch.argv == (
        "xfreerdp",
        "/f",
        "/v:rdp.example.org",
        "/d:EXAMPLE",
        "/u:alice",
        "/from-stdin:force",
        "/cert:tofu",
    )
    assert launch.stdin == b"al1ce-pw\n"
    assert not any("al1ce-pw" in arg for arg in launch.argv)


def test_xfreerdp_never_asks_about_a_certificate_and_accepts_the_pinned_ones() -> None:
    pins = (normalise_fingerprint("AB" * 32), normalise_fingerprint("sha256:" + "0f" * 32))
    launch = rdp_launch(ViewerConfig(rdp_certificates=pins), RdpFailover("rdp.example.org:3390"), "a", "pw")
    assert launch.argv[-2:] == (
        "/from-stdin:force",
        "/cert:deny,fingerprint:sha256:"
        + ":".join(["ab"] * 32)
        + ",fingerprint:sha256:"
        + ":".join(["0f"] * 32),
    )
    assert launch.argv[2] == "/v:rdp.example.org:3390"
    # A /cert option of the configuration's own replaces the launcher's.
    own = rdp_launch(
        ViewerConfig(rdp_args=("/cert:ignore",), rdp_certificates=pins), RdpFailover("h"), "a", "p"
    )
    assert [arg for arg in own.argv if arg.startswith("/cert")] == ["/cert:ignore"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AB" * 32, ":".join(["ab"] * 32)),
        (":".join(["AB"] * 32), ":".join(["ab"] * 32)),
        ("sha256:" + "01" * 32, ":".join(["01"] * 32)),
    ],
)
def test_certificate_fingerprints_are_normalised_as_xfreerdp_compares_them(text: str, expected: str) -> None:
    assert normalise_fingerprint(text) == expected


@pytest.mark.parametrize("text", ["", "ab" * 31, "ab" * 33, "zz" * 32, "sha1:" + "ab" * 20, "ab:" * 31 + "a"])
def test_a_malformed_fingerprint_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SHA-256 fingerprint"):
        normalise_fingerprint(text)


def test_vmware_view_gets_server_and_desktop_and_no_password() -> None:
    launch = horizon_launch(
        ViewerConfig(kiosk=True), HorizonFailover("https://horizon.example", "Lab"), "alice"
    )
    assert launch.argv == (
        "vmware-view",
        "--serverURL=https://horizon.example",
        "--userName=alice",
        "--fullscreen",
        "--desktopName=Lab",
        "--nonInteractive",
    )
    assert launch.stdin == b""
    assert "--nonInteractive" not in horizon_launch(ViewerConfig(kiosk=False), HorizonFailover("s"), "a").argv


def test_a_missing_viewer_program_is_a_clear_message(tmp_path: Path) -> None:
    launch = rdp_launch(ViewerConfig(), RdpFailover("rdp.example.org"), "alice", "pw")
    with pytest.raises(ViewerNotInstalled) as caught:
        start_viewer(launch, env={"PATH": str(tmp_path)})
    assert str(caught.value) == (
        "The RDP viewer (xfreerdp) is not installed on this thin client "
        "(program 'xfreerdp' not found; install freerdp2-x11)."
    )


def test_a_started_viewer_receives_the_secret_on_stdin_and_only_there(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    program = tmp_path / "xfreerdp"
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"json.dump({{'argv': sys.argv, 'stdin': sys.stdin.read()}}, open({str(record)!r}, 'w'))\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    launch = rdp_launch(ViewerConfig(), RdpFailover("rdp.example.org"), "alice", "al1ce-pw")
    process = start_viewer(launch, env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert process.wait() == 0
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == ["/f", "/v:rdp.example.org", "/u:alice", "/from-stdin:force", "/cert:deny"]
    assert seen["stdin"] == "al1ce-pw\n"
