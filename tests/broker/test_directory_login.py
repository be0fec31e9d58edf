"""Directory login against a real slapd (plain LDAP) and the AD look-alike."""

from __future__ import annotations

import asyncio
from typing import Any

import ldap3
import pytest

from app.directory import DirectoryError, DirectoryLogin, DirectoryUnavailable
from app.settings import DirectorySettings
from tests.broker.directory_servers import (
    AD_DOMAIN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    USERS,
    DirectoryServer,
)

INJECTIONS = [
    "*",
    ")(uid=*",
    "admin)(|(uid=*",
    "alice\x00",
    "alice)(",
    "uid=alice,ou=people",
    "alice,ou=x",
    "\\2a",
    "#alice",
    " alice+cn=x",
]


# The suite's directories listen on this machine's loopback: a network the tests trust.
CLEARTEXT_ON_LOOPBACK = True
# LDAP ManageDsaIT: act on a referral object itself instead of being referred.
MANAGE_DSA_IT = ("2.16.840.1.113730.3.4.2", True, None)


def ldap_settings(server: DirectoryServer, mode: str, **extra: Any) -> DirectorySettings:
    values: dict[str, Any] = {
        "kind": "ldap",
        "url": server.url,
        "base_dn": SUFFIX,
        "allow_cleartext": CLEARTEXT_ON_LOOPBACK,
    }
    if mode == "template":
        values["user_dn_template"] = f"uid={{username}},{server.people_dn}"
    else:
        values.update(bind_dn=SERVICE_DN, bind_password=SERVICE_PASSWORD)
    return DirectorySettings(**{**values, **extra})


def ad_settings(server: DirectoryServer) -> DirectorySettings:
    return DirectorySettings(
        kind="ad", url=server.url, base_dn=SUFFIX, ad_domain=AD_DOMAIN, allow_cleartext=CLEARTEXT_ON_LOOPBACK
    )


@pytest.mark.parametrize("mode", ["template", "search"])
async def test_ldap_login_returns_identity_and_memberof_groups(
    ldap_directory: DirectoryServer, mode: str
) -> None:
    """Bind as the DN (template or service-account search): name, mail and memberOf groups."""
    login = DirectoryLogin(ldap_settings(ldap_directory, mode))
    identity = await login.authenticate("alice", USERS["alice"][0])
    assert identity is not None
    assert identity.username == "alice"
    assert identity.dn == ldap_directory.user_dn("alice")
    assert identity.display_name == "Alice Liddell"
    assert identity.email == "alice@example.org"
    assert set(identity.groups) == {"vdi-users", "vdi-staff"}
    assert ldap_directory.group_dn("vdi-staff").lower() in identity.group_keys()


async def test_ldap_groups_from_member_search(ldap_directory: DirectoryServer) -> None:
    """group_source=member finds the groups whose member attribute names the user."""
    login = DirectoryLogin(ldap_settings(ldap_directory, "search", group_source="member"))
    bob = await login.authenticate("bob", USERS["bob"][0])
    assert bob is not None and bob.groups == ("vdi-users",)
    carol = await login.authenticate("carol", USERS["carol"][0])
    assert carol is not None and carol.groups == ()


async def test_ldap_groups_from_a_configured_attribute(ldap_directory: DirectoryServer) -> None:
    """group_source=attribute reads the named attribute of the user's entry."""
    login = DirectoryLogin(
        ldap_settings(ldap_directory, "template", group_source="attribute", group_attribute="memberOf")
    )
    alice = await login.authenticate("alice", USERS["alice"][0])
    assert alice is not None and set(alice.groups) == {"vdi-users", "vdi-staff"}


@pytest.mark.parametrize("mode", ["template", "search"])
async def test_ldap_wrong_password_is_refused(ldap_directory: DirectoryServer, mode: str) -> None:
    login = DirectoryLogin(ldap_settings(ldap_directory, mode))
    assert await login.authenticate("alice", "not-her-password") is None
    assert await login.authenticate("nobody", "whatever-password") is None


@pytest.mark.parametrize("mode", ["template", "search"])
async def test_empty_password_is_refused_before_any_bind(ldap_directory: DirectoryServer, mode: str) -> None:
    """An empty password would be an unauthenticated bind that slapd accepts: it is never sent."""
    login = DirectoryLogin(ldap_settings(ldap_directory, mode))
    before = len(ldap_directory.bind_names())
    assert await login.authenticate("alice", "") is None
    assert await login.authenticate("alice", "") is None
    # A real login afterwards is logged, so the log is live and the count above is meaningful.
    assert await login.authenticate("alice", USERS["alice"][0]) is not None
    names = ldap_directory.bind_names()[before:]
    assert names.count(ldap_directory.user_dn("alice")) == 1


async def test_empty_password_is_refused_before_any_bind_on_ad(ad_directory: DirectoryServer) -> None:
    login = DirectoryLogin(ad_settings(ad_directory))
    before = len(ad_directory.bind_names())
    resolved_before = len(ad_directory.front.resolved if ad_directory.front else [])
    assert await login.authenticate("alice", "") is None
    assert ad_directory.bind_names()[before:] == []
    assert ad_directory.front is not None and len(ad_directory.front.resolved) == resolved_before


@pytest.mark.parametrize("mode", ["template", "search"])
@pytest.mark.parametrize("username", INJECTIONS)
async def test_injection_in_the_username_is_harmless(
    ldap_directory: DirectoryServer, mode: str, username: str
) -> None:
    """Filter and DN metacharacters are escaped: with alice's password, none of these names log in."""
    login = DirectoryLogin(ldap_settings(ldap_directory, mode))
    assert await login.authenticate(username, USERS["alice"][0]) is None


async def test_escaped_names_reach_slapd_escaped(ldap_directory: DirectoryServer) -> None:
    """The DN template gets the RDN-escaped name: a comma cannot move the bind to another subtree."""
    login = DirectoryLogin(ldap_settings(ldap_directory, "template"))
    before = len(ldap_directory.bind_names())
    assert await login.authenticate("x,ou=groups", "some-password") is None
    assert ldap_directory.bind_names()[before:] == [f"uid=x\\2Cou\\3Dgroups,{ldap_directory.people_dn}"]


async def test_ad_login_binds_as_user_at_domain_and_adds_the_primary_group(
    ad_directory: DirectoryServer,
) -> None:
    """AD: memberOf groups plus the primary group found by SID (domain SID + primaryGroupID)."""
    login = DirectoryLogin(ad_settings(ad_directory))
    alice = await login.authenticate("alice", USERS["alice"][0])
    assert alice is not None
    assert set(alice.groups) == {"vdi-users", "vdi-staff", "Domain Users"}
    assert ad_directory.front is not None and "alice@example.org" in ad_directory.front.resolved
    carol = await login.authenticate("carol", USERS["carol"][0])
    assert carol is not None
    # carol is in no group's member list: her only group is her primary group.
    assert carol.groups == ("Lab Staff",)
    assert carol.display_name == "Carol Danvers"


async def test_ad_accepts_the_principal_name_of_its_own_domain_only(ad_directory: DirectoryServer) -> None:
    login = DirectoryLogin(ad_settings(ad_directory))
    identity = await login.authenticate("bob@example.org", USERS["bob"][0])
    assert identity is not None and identity.username == "bob"
    assert await login.authenticate("bob@evil.example", USERS["bob"][0]) is None


async def test_ad_a_principal_name_spelling_another_account_logs_in_its_owner(
    ad_directory: DirectoryServer,
) -> None:
    """Windows AD lets bob's UPN be ``alice@domain`` once alice's own UPN is something else, and
    resolves a bind name by UPN first: "alice" with bob's password binds as bob, and must stay bob."""
    admin = ad_directory.admin()
    alice_dn, bob_dn = ad_directory.user_dn("alice"), ad_directory.user_dn("bob")

    def upn(dn: str, value: str) -> None:
        admin.modify(dn, {"userPrincipalName": [(ldap3.MODIFY_REPLACE, [value])]})

    upn(alice_dn, f"alice.liddell@{AD_DOMAIN}")
    upn(bob_dn, f"alice@{AD_DOMAIN}")
    try:
        login = DirectoryLogin(ad_settings(ad_directory))
        identities = [
            await login.authenticate("alice", USERS["bob"][0]),
            await login.authenticate(f"alice@{AD_DOMAIN}", USERS["bob"][0]),
        ]
    finally:
        upn(bob_dn, f"bob@{AD_DOMAIN}")
        upn(alice_dn, f"alice@{AD_DOMAIN}")
        admin.unbind()
    for identity in identities:
        assert identity is not None and (identity.username, identity.dn) == ("bob", bob_dn)


async def test_ad_wrong_password_and_injection_are_refused(ad_directory: DirectoryServer) -> None:
    login = DirectoryLogin(ad_settings(ad_directory))
    assert await login.authenticate("alice", "wrong-password") is None
    for name in INJECTIONS:
        assert await login.authenticate(name, USERS["alice"][0]) is None


async def test_ldaps_verifies_the_server_certificate(ldap_directory: DirectoryServer) -> None:
    """With the CA file LDAPS works; without it verification (on by default) fails closed."""
    template = f"uid={{username}},{ldap_directory.people_dn}"
    trusted = DirectoryLogin(
        DirectorySettings(
            kind="ldap",
            url=ldap_directory.ldaps_url,
            ca_file=str(ldap_directory.ca_file),
            user_dn_template=template,
        )
    )
    assert await trusted.authenticate("bob", USERS["bob"][0]) is not None
    untrusted = DirectoryLogin(
        DirectorySettings(kind="ldap", url=ldap_directory.ldaps_url, user_dn_template=template)
    )
    with pytest.raises(DirectoryUnavailable):
        await untrusted.authenticate("bob", USERS["bob"][0])


async def test_starttls_upgrades_the_plain_port(ldap_directory: DirectoryServer) -> None:
    login = DirectoryLogin(
        ldap_settings(ldap_directory, "search", start_tls=True, ca_file=str(ldap_directory.ca_file))
    )
    assert await login.authenticate("alice", USERS["alice"][0]) is not None
    assert "STARTTLS" in ldap_directory.log_text()


async def test_unreachable_directory_is_reported_not_taken_for_a_wrong_password() -> None:
    from tests.dashboard import free_port

    login = DirectoryLogin(
        DirectorySettings(
            kind="ldap",
            url=f"ldap://127.0.0.1:{free_port()}",
            allow_cleartext=True,
            user_dn_template="uid={username},o=x",
            timeout=2,
        )
    )
    with pytest.raises(DirectoryUnavailable):
        await login.authenticate("alice", "some-password")


async def test_cleartext_ldap_is_refused_before_any_password_is_sent(ldap_directory: DirectoryServer) -> None:
    """ldap:// without StartTLS: nothing is bound (not even the service account) unless allowed."""
    before = len(ldap_directory.bind_names())
    for mode in ("template", "search"):
        login = DirectoryLogin(ldap_settings(ldap_directory, mode, allow_cleartext=False))
        with pytest.raises(DirectoryError, match="in clear"):
            await login.authenticate("alice", USERS["alice"][0])
    assert ldap_directory.bind_names()[before:] == []
    tls = {"start_tls": True, "ca_file": str(ldap_directory.ca_file)}
    over_tls = DirectoryLogin(ldap_settings(ldap_directory, "search", allow_cleartext=False, **tls))
    assert await over_tls.authenticate("alice", USERS["alice"][0]) is not None


async def test_referrals_are_never_followed(ldap_directory: DirectoryServer) -> None:
    """A referral in the tree (or as the search base) never sends the dashboard's binds elsewhere."""
    contacted: list[str] = []

    async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        contacted.append("connection")
        writer.close()

    listener = await asyncio.start_server(elsewhere, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    referral = f"ou=elsewhere,{ldap_directory.people_dn}"
    admin = ldap_directory.admin()
    admin.add(
        referral,
        ["referral", "extensibleObject"],
        {"ou": "elsewhere", "ref": f"ldap://127.0.0.1:{port}/{ldap_directory.people_dn}"},
    )
    try:
        # The service account's subtree search meets the referral as a continuation reference.
        found = await DirectoryLogin(ldap_settings(ldap_directory, "search")).authenticate(
            "alice", USERS["alice"][0]
        )
        assert found is not None and found.username == "alice"
        # A search base that is itself a referral finds nobody here, and asks nobody else.
        referred = DirectoryLogin(ldap_settings(ldap_directory, "search", base_dn=referral))
        assert await referred.authenticate("alice", USERS["alice"][0]) is None
    finally:
        admin.delete(referral, controls=[MANAGE_DSA_IT])
        admin.unbind()
        listener.close()
        await listener.wait_closed()
    assert contacted == []
