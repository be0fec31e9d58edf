"""Local passwords are stored as Argon2id hashes, verified safely and upgraded when parameters change."""

from __future__ import annotations

from argon2 import PasswordHasher

from app.auth import passwords
from app.auth.accounts import create_local_user
from app.db.schema import users
from tests.dashboard import RunningDashboard


def test_hashes_are_argon2id_and_salted() -> None:
    first = passwords.hash_password("correct horse battery")
    second = passwords.hash_password("correct horse battery")
    assert first.startswith("$argon2id$")
    assert first != second, "every hash has its own salt"
    assert "correct horse battery" not in first


def test_verify_accepts_the_password_and_nothing_else() -> None:
    stored = passwords.hash_password("correct horse battery")
    assert passwords.verify_password(stored, "correct horse battery")
    assert not passwords.verify_password(stored, "correct horse batterY")
    assert not passwords.verify_password(stored, "")


def test_verify_never_raises_on_a_broken_or_missing_hash() -> None:
    assert not passwords.verify_password(None, "anything")
    assert not passwords.verify_password("", "anything")
    assert not passwords.verify_password("$argon2id$garbage", "anything")
    assert not passwords.verify_password("plain-text-from-an-old-import", "plain-text-from-an-old-import")


def test_a_hash_made_with_weaker_parameters_needs_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("correct horse battery")
    assert passwords.needs_rehash(weak)
    assert not passwords.needs_rehash(passwords.hash_password("correct horse battery"))


async def test_logging_in_upgrades_an_outdated_hash(dashboard: RunningDashboard) -> None:
    """A successful log-in replaces a hash made with old parameters by a current one."""
    db = dashboard.services.db
    user_id = await create_local_user(db, "olduser", "an-old-password-1", role="admin")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("an-old-password-1")
    await db.execute(users.update().where(users.c.id == user_id).values(password_hash=weak))

    assert (await dashboard.client().login("olduser", "an-old-password-1")).status_code == 303

    stored = await db.fetch_val(
        users.select().with_only_columns(users.c.password_hash).where(users.c.id == user_id)
    )
    assert stored != weak
    assert not passwords.needs_rehash(stored)
    assert passwords.verify_password(stored, "an-old-password-1")


def test_weak_passwords_are_refused_with_the_reason() -> None:
    for candidate, reason in [("short", "at least 10"), ("Administrator", "differ from the user name")]:
        try:
            passwords.check_strength(candidate, username="administrator")
        except passwords.WeakPasswordError as exc:
            assert reason in str(exc)
        else:
            raise AssertionError(f"{candidate!r} was accepted")
