"""``kvm-vdi check`` checks the directory as the dashboard uses it: reachable, over TLS or not,
and the service account's bind, against the suite's real OpenLDAP (plain, StartTLS and LDAPS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.directory.check import check_directory
from app.settings import DirectorySettings
from tests.broker.directory_servers import ADMIN_DN, ADMIN_PASSWORD, DirectoryServer
from tests.cli import cli_env, kvm_vdi


def settings(server: DirectoryServer, **values: object) -> DirectorySettings:
    base: dict[str, object] = {
        "kind": "ldap",
        "url": server.url,
        "base_dn": server.people_dn,
        "bind_dn": ADMIN_DN,
        "bind_password": ADMIN_PASSWORD,
        "ca_file": str(server.ca_file),
        # The suite's slapd listens on loopback, a network the tests trust.
        "allow_cleartext": True,
    }
    return DirectorySettings.model_validate({**base, **values})


def test_the_service_account_bind_is_checked_over_each_transport(ldap_directory: DirectoryServer) -> None:
    plain = check_directory(settings(ldap_directory))
    assert plain[0] == "warn" and "cleartext" in plain[1] and f"bound as {ADMIN_DN}" in plain[1]
    refused = check_directory(settings(ldap_directory, allow_cleartext=False))
    assert refused[0] == "FAIL" and "in clear" in refused[1] and "allow_cleartext" in refused[1]
    start_tls = check_directory(settings(ldap_directory, start_tls=True))
    assert start_tls == ("ok", f"{ldap_directory.url} reachable over StartTLS, bound as {ADMIN_DN}")
    ldaps = check_directory(settings(ldap_directory, url=ldap_directory.ldaps_url))
    assert ldaps[0] == "ok" and "over LDAPS" in ldaps[1]


def test_a_refused_account_an_unreachable_server_and_an_untrusted_certificate_fail(
    ldap_directory: DirectoryServer, tmp_path: Path
) -> None:
    refused = check_directory(settings(ldap_directory, start_tls=True, bind_password="wrong-password"))
    assert refused[0] == "FAIL" and "cannot bind" in refused[1] and "wrong-password" not in refused[1]
    nobody = check_directory(settings(ldap_directory, url="ldap://127.0.0.1:1", timeout=2))
    assert nobody[0] == "FAIL" and "cannot be reached" in nobody[1]
    untrusted = check_directory(settings(ldap_directory, url=ldap_directory.ldaps_url, ca_file=None))
    assert untrusted[0] == "FAIL"
    assert check_directory(DirectorySettings()) == ("skip", "not configured (directory.kind = none)")


@pytest.mark.slow  # a kvm-vdi subprocess
def test_kvm_vdi_check_prints_the_directory_line(ldap_directory: DirectoryServer, tmp_path: Path) -> None:
    env = cli_env(
        f"sqlite:///{tmp_path / 'vdi.sqlite3'}",
        tmp_path / "var",
        KVMVDI_DIRECTORY__KIND="ldap",
        KVMVDI_DIRECTORY__URL=ldap_directory.url,
        KVMVDI_DIRECTORY__BIND_DN=ADMIN_DN,
        KVMVDI_DIRECTORY__BIND_PASSWORD=ADMIN_PASSWORD,
    )
    assert kvm_vdi("db", "upgrade", env=env).returncode == 0
    result = kvm_vdi("check", env=env)
    line = next(line for line in result.stdout.splitlines() if line.startswith("directory"))
    assert "FAIL" in line and "in clear" in line and result.returncode == 1, result.stdout
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
