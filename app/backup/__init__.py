"""Backup and restore: an encrypted archive of the database, the dashboard's keys and its configuration."""

from app.backup.archive import BackupSummary, RestoreSummary, create_backup, restore_backup
from app.backup.crypto import BackupCryptoError
from app.backup.dump import RestoreRefused

__all__ = [
    "BackupCryptoError",
    "BackupSummary",
    "RestoreRefused",
    "RestoreSummary",
    "create_backup",
    "restore_backup",
]
