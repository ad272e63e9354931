"""Per-account request counters in fixed windows: one UPSERT per request (see api/rate_limits.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite

from cogport.db.tables import RateLimitWindow
from cogport.db.writer import Tx

__all__ = ["hit", "prune"]

WINDOWS = cast(Table, RateLimitWindow.__table__)


def _upsert(insert: Callable[[Table], Any]) -> Any:
    new = insert(WINDOWS).values(
        account_id=bindparam("hit_account"), kind=bindparam("hit_kind"), window=bindparam("hit_window"), count=1
    )
    return new.on_conflict_do_update(
        index_elements=[WINDOWS.c.account_id, WINDOWS.c.kind, WINDOWS.c.window],
        set_={"count": WINDOWS.c.count + 1},
    ).returning(WINDOWS.c.count)


_HIT = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}
"""The UPSERT per dialect, built once: built per call (each non-admin request), SQLAlchemy computed its
compile-cache key every time (the same cost as status.py's UPDATEs had: tens to hundreds of us)."""


def hit(tx: Tx, account_id: int, kind: str, window: int) -> int:
    """Count one request of ``account_id`` in ``window``; the window's count with it."""
    statement = _HIT["postgresql" if tx.conn.dialect.name == "postgresql" else "sqlite"]
    params = {"hit_account": account_id, "hit_kind": kind, "hit_window": window}
    return int(tx.conn.execute(statement, params).scalar_one())


def prune(tx: Tx, before: int) -> None:
    """Forget the windows that started before ``before``."""
    tx.conn.execute(delete(WINDOWS).where(WINDOWS.c.window < before))
