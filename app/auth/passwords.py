"""Argon2id password hashing (argon2-cffi defaults follow RFC 9106 recommendations)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.i18n import gettext as _

_hasher = PasswordHasher()

MIN_LENGTH = 10


class WeakPasswordError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; never raises for a bad or missing hash."""
    if not password_hash or not password:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def generate_password() -> str:
    """A strong random password that is still typeable (about 120 bits)."""
    return secrets.token_urlsafe(15)


def check_strength(password: str, *, username: str = "") -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(
            _("the password must have at least {MIN_LENGTH} characters").format(MIN_LENGTH=MIN_LENGTH)
        )
    if username and password.lower() == username.lower():
        raise WeakPasswordError(_("the password must differ from the user name"))
