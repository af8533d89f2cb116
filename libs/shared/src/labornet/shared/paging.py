"""Opaque keyset cursors for paged lists: the sort key and id of the last row given out, base64url JSON.

A cursor is only ever produced by the list it pages, so anything else — garbled, edited, or made for another
sort order — is an :class:`InvalidCursor` (a 422 for the caller), never a silently wrong page.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from labornet.shared.bounds import fits_int64
from labornet.shared.db import as_utc


class InvalidCursor(ValueError):
    """The cursor was not made by this list (or not for this sort order); the message says so."""


def encode_cursor(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Any:
    """The JSON payload of ``cursor``; ``ValueError`` (binascii, Unicode or JSON) when it is not one."""
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def encode_sort_cursor(sort: str, key: datetime | int, last_id: str) -> str:
    """A cursor after the row with sort key ``key`` (a time for ``newest``, a number otherwise) and id ``last_id``."""
    value = key.isoformat() if isinstance(key, datetime) else key
    return encode_cursor({"sort": sort, "key": value, "id": last_id})


def decode_sort_cursor(
    cursor: str, sort: str, sorts: Sequence[str], time_sort: str = "newest"
) -> tuple[datetime | int, str]:
    """The sort key and id a cursor of :func:`encode_sort_cursor` carries, checked against ``sort``."""
    try:
        payload = decode_cursor(cursor)
        made_for, key, last_id = payload["sort"], payload["key"], payload["id"]
        if not isinstance(last_id, str):
            raise TypeError("id is not a string")
        if made_for == sort == time_sort and isinstance(key, str):
            return as_utc(datetime.fromisoformat(key)), last_id
        if made_for == sort != time_sort and isinstance(key, int) and not isinstance(key, bool) and fits_int64(key):
            return key, last_id
    except (ValueError, KeyError, TypeError) as exc:  # binascii, Unicode and JSON errors are ValueErrors
        raise InvalidCursor(
            f"cursor {cursor[:40]!r} is not a next_cursor of this search ({exc}); start again without a cursor"
        ) from exc
    if made_for in sorts and made_for != sort:
        raise InvalidCursor(f"cursor was made for sort {made_for!r}, not {sort!r}; start again without a cursor")
    raise InvalidCursor(f"cursor {cursor[:40]!r} is not a next_cursor of this search; start again without a cursor")
