"""Active Directory log-in against the real Samba AD domain controller (not the slapd look-alike).

The DC is shared by the whole session: a test that changes it (a user's principal name, a
nested group) puts it back as it found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ldap3
from pydantic import SecretStr

from app.directory import DirectoryLogin
from app.settings import DirectorySettings
from tests.services.samba_ad import SambaAD


def ad_login(samba_ad: SambaAD) -> DirectoryLogin:
    # The DC's certificate names dc1.corp.example.com, which no resolver here knows: plain LDAP
    # inside the suite's own network namespace.
    return DirectoryLogin(
        DirectorySettings(
            kind="ad",
            url=samba_ad.url,
            allow_cleartext=True,
            base_dn=samba_ad.base_dn,
            ad_domain=samba_ad.domain,
        )
    )


@contextmanager
def administrator(samba_ad: SambaAD) -> Iterator[ldap3.Connection]:
    server = ldap3.Server(samba_ad.url, get_info=ldap3.NONE)
    with ldap3.Connection(server, samba_ad.admin_upn, samba_ad.admin_password, auto_bind=True) as conn:
        yield conn


def set_principal_name(conn: ldap3.Connection, dn: str, upn: str) -> None:
    assert conn.modify(dn, {"userPrincipalName": [(ldap3.MODIFY_REPLACE, [upn])]}), conn.result


async def test_log_in_by_account_name_and_by_principal_name_is_the_same_person(samba_ad: SambaAD) -> None:
    login = ad_login(samba_ad)
    alice = samba_ad.users["alice"]
    by_name = await login.authenticate("alice", alice.password)
    by_upn = await login.authenticate(alice.user_principal_name, alice.password)
    assert by_name is not None and by_upn is not None
    assert by_name == by_upn
    assert by_name.username == "alice" and by_name.dn == alice.dn
    assert by_name.display_name == "Alice Smith" and by_name.email == alice.mail
    # memberOf, plus the primary group AD leaves out of it.
    assert set(by_name.groups) == {"vdi-admins", "vdi-users", "Domain Users"}
    assert samba_ad.groups["vdi-users"] in by_name.group_dns
    assert await login.authenticate("alice", "not her password") is None
    carol = samba_ad.users["carol"]  # disabled in the directory
    assert await login.authenticate("carol", carol.password) is None


async def test_a_principal_name_with_another_suffix_logs_in(samba_ad: SambaAD) -> None:
    """UPN suffixes need not be the domain's DNS name (an organisation's mail domain, say)."""
    bob = samba_ad.users["bob"]
    with administrator(samba_ad) as admin:
        set_principal_name(admin, bob.dn, "bob.jones@mokykla.example")
        try:
            identity = await ad_login(samba_ad).authenticate("bob.jones@mokykla.example", bob.password)
        finally:
            set_principal_name(admin, bob.dn, bob.user_principal_name)
    assert identity is not None and identity.username == "bob" and identity.dn == bob.dn


async def test_a_principal_name_that_spells_another_account_cannot_become_it(samba_ad: SambaAD) -> None:
    """bob's UPN is made ``alice@<another suffix>``: that name with bob's password logs bob in, as bob.

    (Samba refuses a UPN that spells another account under the domain's own suffix; Windows
    AD does not, which the look-alike's test in test_directory_login.py covers.) The account
    read after the bind must be the one that bound, never the one the typed name spells.
    """
    bob = samba_ad.users["bob"]
    with administrator(samba_ad) as admin:
        set_principal_name(admin, bob.dn, "alice@mokykla.example")
        try:
            identity = await ad_login(samba_ad).authenticate("alice@mokykla.example", bob.password)
        finally:
            set_principal_name(admin, bob.dn, bob.user_principal_name)
    assert identity is not None, "bob's own credentials do log bob in"
    assert (identity.username, identity.dn) == ("bob", bob.dn)
    assert "vdi-admins" not in identity.groups


async def test_groups_nested_in_the_users_groups_count(samba_ad: SambaAD) -> None:
    """A group whose member is vdi-users (not bob himself) is one of bob's groups too."""
    bob = samba_ad.users["bob"]
    nested = f"CN=vdi-lab-b,CN=Users,{samba_ad.base_dn}"
    with administrator(samba_ad) as admin:
        assert admin.add(nested, ["top", "group"], {"sAMAccountName": "vdi-lab-b"}), admin.result
        try:
            assert admin.modify(nested, {"member": [(ldap3.MODIFY_ADD, [samba_ad.groups["vdi-users"]])]})
            identity = await ad_login(samba_ad).authenticate("bob", bob.password)
        finally:
            admin.delete(nested)
    assert identity is not None
    assert set(identity.groups) == {"vdi-users", "vdi-lab-b", "Domain Users"}


async def test_the_service_account_reads_an_account_again_without_its_password(samba_ad: SambaAD) -> None:
    """What a session's group re-reading sees: the groups now, and nothing for a disabled account."""
    login = DirectoryLogin(
        DirectorySettings(
            kind="ad",
            url=samba_ad.url,
            allow_cleartext=True,
            base_dn=samba_ad.base_dn,
            ad_domain=samba_ad.domain,
            bind_dn=samba_ad.admin_upn,
            bind_password=SecretStr(samba_ad.admin_password),
        )
    )
    assert login.can_recheck
    alice = await login.lookup("alice")
    assert alice is not None and alice.dn == samba_ad.users["alice"].dn
    assert set(alice.groups) == {"vdi-admins", "vdi-users", "Domain Users"}
    assert await login.lookup("carol") is None, "disabled in the directory"
    assert await login.lookup("nobody-here") is None
