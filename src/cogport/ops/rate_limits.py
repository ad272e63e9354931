"""Per-account request counters in fixed windows: one UPSERT per request (see api/rate_limits.py)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, delete
from sqlalchemy.dialects import postgresql, sqlite

from cogport.db.tables import RateLimitWindow
from cogport.db.writer import Tx

__all__ = ["hit", "prune"]

WINDOWS = cast(Table, RateLimitWindow.__table__)


def hit(tx: Tx, account_id: int, kind: str, window: int) -> int:
    """Count one request of ``account_id`` in ``window``; the window's count with it."""
    insert = postgresql.insert if tx.conn.dialect.name == "postgresql" else sqlite.insert
    new = insert(WINDOWS).values(account_id=account_id, kind=kind, window=window, count=1)
    statement = new.on_conflict_do_update(
        index_elements=[WINDOWS.c.account_id, WINDOWS.c.kind, WINDOWS.c.window],
        set_={"count": WINDOWS.c.count + 1},
    ).returning(WINDOWS.c.count)
    return int(tx.conn.execute(statement).scalar_one())


def prune(tx: Tx, before: int) -> None:
    """Forget the windows that started before ``before``."""
    tx.conn.execute(delete(WINDOWS).where(WINDOWS.c.window < before))
