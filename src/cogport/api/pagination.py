"""Opaque cursors and absolute ``next``/``previous`` URLs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from cogport import storable
from cogport.db.keyset import Cursor, Direction, KeysetPage
from cogport.errors import BadRequest, InvalidCursor


def encode(cursor: Cursor) -> str:
    value, tie = cursor.key
    payload = {
        "v": value.isoformat() if isinstance(value, datetime) else value,
        "t": tie,
        "d": cursor.direction[0],
        "dt": isinstance(value, datetime),
    }
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


_DIRECTIONS: dict[str, Direction] = {"n": "next", "p": "previous"}
_MAX_INT = 2**31 - 1  # keys are 32-bit ids: anything larger would fail in the database, not here


def _scalar(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("a cursor key must be an integer or a string")
    if isinstance(value, int) and not 0 <= value <= _MAX_INT:
        raise ValueError("cursor key out of range")
    if isinstance(value, str) and (len(value) > 200 or storable.problem(value) is not None):
        raise ValueError("cursor key too long or not storable text")
    return value


MAX_CURSOR = 1024
"""Longer than any cursor this server writes."""


def decode(raw: str | None) -> Cursor | None:
    """The cursor in a ``cursor`` query parameter; :class:`BadRequest` for anything we did not write."""
    if not raw:
        return None
    if len(raw) > MAX_CURSOR:
        raise InvalidCursor()
    try:
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(payload, dict):
            raise TypeError("a cursor is a JSON object")
        value: Any = payload["v"]
        if payload.get("dt") is True:
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise ValueError("a cursor time needs a timezone")
            value = value.astimezone(UTC)  # out of range (year 1 at +01:00) here, not in the database
        else:
            value = _scalar(value)
        direction = _DIRECTIONS[payload["d"]]
        return Cursor(key=(value, _scalar(payload["t"])), direction=direction)
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
        raise InvalidCursor() from exc


def links(request: Request, base_url: str, page: KeysetPage[Any]) -> tuple[str | None, str | None]:
    def url_for(cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        params = dict(request.query_params)
        params["cursor"] = encode(cursor)
        return f"{base_url}{request.url.path}?{urlencode(params)}"

    return url_for(page.next), url_for(page.previous)


def time_filter(raw: str | None, name: str) -> datetime | None:
    """A ``created_after``/``created_before`` value: an ISO 8601 date or date-time (``Z`` or an offset; none
    means UTC), as the clients send it. Anything else is a 400, never a 500."""
    if raw is None or not raw.strip():
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name} must be an ISO 8601 date or date-time, such as 2026-01-31T12:00:00Z") from None
