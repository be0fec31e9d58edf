"""Rows as the domain sees them: one frozen, typed record per table.

A query's rows become records here (:func:`fetch_record`, :func:`fetch_records`),
so domain code, handlers and templates share one typed shape per table and mypy
sees real types instead of ``Any``. A record names the table it mirrors in
``__table__``; ``tests/test_records.py`` checks that its fields are that table's
columns, so a new column cannot be forgotten. Records of joined queries add
their extra columns as fields of their own.

The records of tables with behaviour of their own live with that behaviour:
:class:`app.vms.records.Vm`, :class:`app.hyper.records.HypervisorRecord`,
:class:`app.vms.operation_records.Operation`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql import ClauseElement

from app.db.schema import directory_groups, leases, pool_schedules, pools, users


class Row(Protocol):
    """A database row: ``databases``' records and SQLAlchemy's rows both have this mapping."""

    @property
    def _mapping(self) -> Mapping[Any, Any]: ...


class Fetcher(Protocol):
    """A ``databases`` Database or Connection (inside a transaction)."""

    async def fetch_one(self, query: ClauseElement) -> Row | None: ...
    async def fetch_all(self, query: ClauseElement) -> Sequence[Row]: ...


def _as_bool(value: Any) -> bool:
    # SQLite hands booleans back as 0/1 on some paths.
    return bool(value)


def _as_int(value: Any) -> int:
    # MariaDB hands sums back as Decimal.
    return int(value)


def _as_float(value: Any) -> float:
    return float(value)


def _keep(value: Any) -> Any:
    return value


class Record:
    """Base of the records: built from a row by column name."""

    __table__: ClassVar[sa.Table | None] = None

    @classmethod
    def from_row(cls, row: Row) -> Self:
        mapping = row._mapping
        return cls(**{name: convert(mapping[name]) for name, convert in _converters(cls)})


_CONVERSIONS: dict[object, Callable[[Any], Any]] = {bool: _as_bool, int: _as_int, float: _as_float}
_Converters = tuple[tuple[str, Callable[[Any], Any]], ...]
_CONVERTERS: dict[type, _Converters] = {}


def _converters(cls: type) -> _Converters:
    """(field, conversion) of a record class, worked out once from its type hints."""
    found = _CONVERTERS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _CONVERTERS[cls] = tuple(
            (f.name, _CONVERSIONS.get(hints[f.name], _keep)) for f in fields(cls)
        )
    return found


R = TypeVar("R", bound=Record)


async def fetch_record(db: Fetcher, record: type[R], query: ClauseElement) -> R | None:
    """The first row of ``query`` as a ``record``, or ``None``."""
    row = await db.fetch_one(query)
    return None if row is None else record.from_row(row)


async def fetch_records(db: Fetcher, record: type[R], query: ClauseElement) -> list[R]:
    """Every row of ``query`` as a ``record``."""
    return [record.from_row(row) for row in await db.fetch_all(query)]


@dataclass(frozen=True)
class Identified(Record):
    """Just an id column."""

    id: int


@dataclass(frozen=True)
class Named(Record):
    """Just a name column."""

    name: str


@dataclass(frozen=True)
class Tally(Record):
    """A count per key: ``select(<column>.label("key"), count(...).label("n")).group_by(...)``."""

    key: str
    n: int


async def fetch_tallies(db: Fetcher, query: ClauseElement) -> dict[str, int]:
    return {tally.key: tally.n for tally in await fetch_records(db, Tally, query)}


@dataclass(frozen=True)
class UserRecord(Record):
    __table__ = users

    id: int
    username: str
    source: str
    role: Literal["admin", "client"]
    password_hash: str | None
    must_change_password: bool
    disabled: bool
    display_name: str
    email: str
    created_at: datetime | None
    last_login_at: datetime | None
    # The language the user chose ("": the browser's).
    language: str
    # Desktop requests made (written by each allocation: serializes a user's requests on Galera).
    desktop_requests: int


@dataclass(frozen=True)
class DirectoryGroupRecord(Record):
    __table__ = directory_groups

    id: int
    name: str
    description: str
    created_at: datetime | None


@dataclass(frozen=True)
class PoolRecord(Record):
    __table__ = pools

    id: int
    name: str
    description: str
    maintenance: bool
    lease_timeout_min: int
    reset_on_handout: bool
    keep_ready: int
    max_per_user: int
    failover_kind: str
    failover_host: str
    failover_domain: str
    failover_pool: str
    straight_to_desktop: bool
    clipboard: bool
    file_transfer: bool
    usb_redirect: int
    # Snapshots a desktop's user may keep of it in the portal (0: none).
    user_snapshots: int
    created_at: datetime | None


@dataclass(frozen=True)
class LeaseRecord(Record):
    __table__ = leases

    id: int
    user_id: int
    vm_id: int
    pool_id: int | None
    client_address: str
    started_at: datetime
    last_heartbeat_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str


@dataclass(frozen=True)
class ScheduleRecord(Record):
    """A pool schedule's row; :mod:`app.broker.schedules` makes it a ``Schedule``."""

    __table__ = pool_schedules

    id: int
    pool_id: int
    kind: str
    days: str
    at: str
    until: str | None
    count: int
    enabled: bool
    created_by: str
    created_at: datetime
    last_run_at: datetime | None
    last_finished_at: datetime | None
    last_status: str | None
    last_result: str | None
