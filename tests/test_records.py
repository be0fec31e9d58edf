"""Rows reach the domain as typed, frozen records: one per table, with exactly its columns."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

import app.application
import app.checks  # noqa: F401
from app.db.records import Record, Tally, UserRecord
from app.db.schema import metadata

# Tables read only through a join, by the record that names what the join adds.
READ_THROUGH_JOINS = {
    "api_tokens": "app.broker.tokens._TokenRow",
    "console_tickets": "app.proxy.tickets.ConsoleTicket",
    "sessions": "app.auth.sessions.SessionRecord",
    # Read a key and its value at a time.
    "user_preferences": "app.vms.view_preferences.Preference",
    # Membership links: the domain reads which pool, never a row of its own.
    "pool_vms": "app.broker.pools.PoolMembership",
    "pool_users": "app.broker.pools.PoolMembership",
    "pool_groups": "app.broker.pools.PoolGroupGrant",
}


def _records() -> list[type[Record]]:
    found: list[type[Record]] = []
    pending = list(Record.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _table_records() -> dict[str, list[type[Record]]]:
    by_table: dict[str, list[type[Record]]] = {}
    for cls in _records():
        table = cls.__dict__.get("__table__")
        if table is not None:
            by_table.setdefault(table.name, []).append(cls)
    return by_table


def test_every_table_has_one_record_or_is_read_through_a_named_join() -> None:
    by_table = _table_records()
    for name, classes in by_table.items():
        assert len(classes) == 1, f"table {name} has several records: {classes}"
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in _records()}
    for table in metadata.tables:
        if table in by_table:
            continue
        assert table in READ_THROUGH_JOINS, f"table {table} has no record: add one (app/db/records.py)"
        assert READ_THROUGH_JOINS[table] in names, f"{READ_THROUGH_JOINS[table]} is gone"


@pytest.mark.parametrize("table", sorted(_table_records()))
def test_a_table_record_has_exactly_the_columns_of_its_table(table: str) -> None:
    (cls,) = _table_records()[table]
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    columns = [c.name for c in metadata.tables[table].columns]
    assert sorted(fields) == sorted(columns), f"{cls.__qualname__} and table {table} disagree"
    assert cls.__dataclass_params__.frozen, f"{cls.__qualname__} must be frozen"  # type: ignore[attr-defined]


class _Row:
    """What ``databases`` hands back: a row with a mapping of column names."""

    def __init__(self, **values: Any) -> None:
        self._mapping = values


def test_a_record_is_built_by_column_name_with_booleans_and_numbers_normalised() -> None:
    row = _Row(
        id=7,
        username="ana",
        source="local",
        role="client",
        password_hash=None,
        must_change_password=0,  # SQLite hands booleans back as integers on some paths
        disabled=1,
        display_name="Ana",
        email="",
        created_at=None,
        last_login_at=None,
        language="lt",
        desktop_requests=Decimal(2),  # MariaDB may hand a number back as Decimal
        unrelated="columns a query adds are ignored",
    )
    user = UserRecord.from_row(row)
    assert user == UserRecord(7, "ana", "local", "client", None, False, True, "Ana", "", None, None, "lt", 2)
    assert user.disabled is True and user.must_change_password is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.disabled = False  # type: ignore[misc]
    # MariaDB sums are Decimals: a count is an int all the same.
    assert Tally.from_row(_Row(key="pool", n=Decimal(3))) == Tally("pool", 3)
    assert type(Tally.from_row(_Row(key="pool", n=Decimal(3))).n) is int
