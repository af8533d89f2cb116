"""Integers a client may send, bounded to what the databases store (a signed 64-bit or 32-bit integer).

Python integers have no upper limit; SQLite and PostgreSQL ``BIGINT`` do. An unbounded ``int`` in a query, path or
body reaches the database and fails there; these types refuse it at the edge as a 422 that names the field. Use
them for every integer of a request (``Annotated[NonNegativeInt64 | None, Query()]``, ``version: PositiveInt64``);
a field with a smaller domain bound of its own (``Field(ge=0, le=1_000_000)``) needs none. A value stored in an
``INTEGER`` column (versions, salaries, counts of one case) takes the 32-bit types: PostgreSQL refuses a larger
parameter even in a comparison (``value out of int32 range``), which would otherwise be a 500.
"""

from typing import Annotated

from annotated_types import Interval

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Int64 = Annotated[int, Interval(ge=INT64_MIN, le=INT64_MAX)]
NonNegativeInt64 = Annotated[int, Interval(ge=0, le=INT64_MAX)]
PositiveInt64 = Annotated[int, Interval(ge=1, le=INT64_MAX)]

INT32_MAX = 2**31 - 1

NonNegativeInt32 = Annotated[int, Interval(ge=0, le=INT32_MAX)]
PositiveInt32 = Annotated[int, Interval(ge=1, le=INT32_MAX)]


def fits_int64(value: int) -> bool:
    """Whether ``value`` can be stored as a signed 64-bit integer (for integers parsed outside pydantic)."""
    return INT64_MIN <= value <= INT64_MAX


def parse_non_negative_int64(text: str, maximum: int = INT64_MAX) -> int | None:
    """The number ``text`` writes in decimal digits, or None when it is not one or is above ``maximum`` (64 bits
    unless said)."""
    text = text.strip()
    if not text.isdecimal() or len(text) > len(str(maximum)):  # the length first: int() of a long text is slow
        return None
    value = int(text)
    return value if value <= maximum else None
