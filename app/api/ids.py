"""Row ids in URL paths: ``{vm_id:id}``.

Starlette's ``int`` takes any number of digits, and a 20-digit id reached the database driver,
which cannot bind it (SQLite and MariaDB integers are 64-bit): a 500. An id here is at most 18
digits, so anything longer matches no route and is a plain 404. Importing this module registers
the convertor; ``app.views`` imports it before any route is built.
"""

from __future__ import annotations

import re

from starlette.convertors import IntegerConvertor, register_url_convertor

# 18 digits stay below 2**63 - 1, the largest id either database stores.
MAX_ID = 10**18 - 1


_DIGITS = re.compile("[0-9]{1,18}")


class RowIdConvertor(IntegerConvertor):
    regex = _DIGITS.pattern


register_url_convertor("id", RowIdConvertor())


def parse_id(text: object) -> int | None:
    """An id from a route that takes its ids as text (to answer a bad one in the error model):
    ``None`` unless it is 1 to 18 ASCII digits."""
    value = str(text)
    return int(value) if _DIGITS.fullmatch(value) else None
