"""LDAP / Active Directory login (ldap3): bind as the user, read identity and groups."""

from app.directory.login import (
    DirectoryError,
    DirectoryIdentity,
    DirectoryLogin,
    DirectoryUnavailable,
    InvalidUsername,
)

__all__ = ["DirectoryError", "DirectoryIdentity", "DirectoryLogin", "DirectoryUnavailable", "InvalidUsername"]
