"""Opaque cursors and absolute ``next``/``previous`` URLs."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from cogport.db.keyset import Cursor, KeysetPage
from cogport.errors import BadRequest


def encode(cursor: Cursor) -> str:
    value, tie = cursor.key
    payload = {
        "v": value.isoformat() if isinstance(value, datetime) else value,
        "t": tie,
        "d": "p" if cursor.direction == "previous" else "n",
        "dt": isinstance(value, datetime),
    }
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(raw: str | None) -> Cursor | None:
    if not raw:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        value: Any = payload["v"]
        if payload.get("dt"):
            value = datetime.fromisoformat(value)
        return Cursor(key=(value, payload["t"]), direction="previous" if payload["d"] == "p" else "next")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest("The cursor is not valid; use the next or previous URL of a page as it is") from exc


def links(request: Request, base_url: str, page: KeysetPage[Any]) -> tuple[str | None, str | None]:
    def url_for(cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        params = dict(request.query_params)
        params["cursor"] = encode(cursor)
        return f"{base_url}{request.url.path}?{urlencode(params)}"

    return url_for(page.next), url_for(page.previous)
