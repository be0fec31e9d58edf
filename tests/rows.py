"""Rows a test expects to be there, typed: a record where the table has one, else by column name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy.sql import ClauseElement

from app.db.records import Fetcher, Record, fetch_record

R = TypeVar("R", bound=Record)


async def the_record(db: Fetcher, record: type[R], query: ClauseElement) -> R:
    """The first row of ``query`` as a ``record``; the test fails if there is none."""
    found = await fetch_record(db, record, query)
    assert found is not None, f"no {record.__name__} row for {query}"
    return found


async def the_row(db: Fetcher, query: ClauseElement) -> Mapping[str, Any]:
    """The first row of ``query`` by column name; the test fails if there is none."""
    row = await db.fetch_one(query)
    assert row is not None, f"no row for {query}"
    return row._mapping
