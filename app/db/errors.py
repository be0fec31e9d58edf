"""The database drivers' errors, grouped by what they mean for a request.

``databases`` hands the driver's own exceptions through (sqlite3 for SQLite,
PyMySQL under aiomysql for MariaDB), which share no base class.
"""

from __future__ import annotations

import sqlite3

import pymysql  # type: ignore[import-untyped]

# A unique key (a name) or a reference was violated: usually two changes made at once.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, pymysql.err.IntegrityError)
