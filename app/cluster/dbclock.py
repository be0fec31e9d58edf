"""The database's clock, in SQL: one clock for every replica's heartbeats and leases.

Replicas on different machines disagree about the time by whatever their NTP allows;
comparing values all written and read with the database's own clock, inside the
statement, keeps that out of every decision about who is alive and who holds a lease.
"""

from __future__ import annotations

import sqlalchemy as sa


def now_ms(dialect: str) -> sa.ColumnElement[int]:
    """Milliseconds since the epoch, as the database sees them now."""
    if dialect == "sqlite":
        return sa.cast((sa.func.julianday("now") - 2440587.5) * 86400000.0, sa.BigInteger)
    # UNIX_TIMESTAMP is UTC whatever the session's time zone; NOW(6) has microseconds.
    return sa.cast(sa.func.unix_timestamp(sa.func.now(6)) * 1000, sa.BigInteger)


def ms(seconds: float) -> int:
    return round(seconds * 1000)
