"""Terminal webhook deliveries, durable in the database so retries survive a restart.

The sender claims due deliveries in batches (:func:`claim`: one statement, ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL so that several processes never claim the same row) and records the outcomes of many attempts at
once (:func:`record`). Both are group-writer operations (:mod:`cogport.db.writer`), so on SQLite they share
the hot path's single writer instead of contending with it for the database's lock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, insert, not_, or_, select, update

from cogport.db.tables import WebhookDelivery, utcnow
from cogport.db.writer import Tx

_TABLE = cast(Table, WebhookDelivery.__table__)


def target_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased as written (the unit of per-target concurrency)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.lower()
    return f"{parts.scheme}://{parts.netloc}".lower()


def enqueue(tx: Tx, *, prediction_id: str, account_id: int, url: str, body: str, message_id: str) -> None:
    """Queue a terminal webhook (a group-writer operation: in the transaction that ends the prediction)."""
    now = utcnow()
    tx.conn.execute(
        insert(_TABLE).values(
            message_id=message_id,
            prediction_id=prediction_id,
            account_id=account_id,
            url=url,
            body=body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt: ``attempts`` counts it; held until ``held_until``."""

    id: int
    message_id: str
    account_id: int
    url: str
    body: str
    attempts: int
    created_at: datetime
    prediction_id: str


@dataclass(frozen=True)
class Outcome:
    """What became of an attempt: delivered, to be retried at ``retry_at``, or failed for good."""

    id: int
    attempts: int
    """The claim's count: a record for an older claim (one held too long, taken again since) is ignored."""
    delivered: bool
    error: str | None
    retry_at: datetime | None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _to_target(target: str) -> ColumnElement[bool]:
    url = func.lower(_TABLE.c.url)
    prefix = _escape_like(target)
    return or_(url == target, *(url.like(prefix + tail, escape="\\") for tail in ("/%", "?%", "#%")))


def claim(
    tx: Tx, *, limit: int, hold: float, per_target: int, room: Mapping[str, int], full: Collection[str]
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries, oldest first, at most ``room[target]`` (default ``per_target``)
    per target and none to the targets in ``full``; each is due again ``hold`` seconds from now (when the
    process that took it died mid-attempt).

    One ``UPDATE … WHERE id IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED]) RETURNING``, then the rows over
    a target's room are handed back in the same transaction (no other process saw them taken).
    """
    now = utcnow()
    due: list[ColumnElement[bool]] = [_TABLE.c.status == "pending", _TABLE.c.next_attempt_at <= now]
    due += [not_(_to_target(target)) for target in full]
    candidates = select(_TABLE.c.id).where(*due).order_by(_TABLE.c.next_attempt_at, _TABLE.c.id).limit(limit)
    if tx.conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    taken = tx.conn.execute(
        update(_TABLE)
        .where(_TABLE.c.id.in_(candidates.scalar_subquery()), *due[:2])
        .values(next_attempt_at=now + timedelta(seconds=hold), attempts=_TABLE.c.attempts + 1)
        .returning(
            _TABLE.c.id,
            _TABLE.c.message_id,
            _TABLE.c.account_id,
            _TABLE.c.url,
            _TABLE.c.body,
            _TABLE.c.attempts,
            _TABLE.c.created_at,
            _TABLE.c.prediction_id,
        )
    ).all()
    kept: list[Claimed] = []
    handed_back: list[int] = []
    taken_per_target: dict[str, int] = {}
    for row in sorted(taken, key=lambda row: row.id):
        target = target_of(row.url)
        count = taken_per_target.get(target, 0)
        if count < room.get(target, per_target):
            taken_per_target[target] = count + 1
            kept.append(
                Claimed(
                    row.id,
                    row.message_id,
                    row.account_id,
                    row.url,
                    row.body,
                    row.attempts,
                    row.created_at,
                    row.prediction_id,
                )
            )
        else:
            handed_back.append(row.id)
    if handed_back:
        tx.conn.execute(
            update(_TABLE)
            .where(_TABLE.c.id.in_(handed_back))
            .values(next_attempt_at=now, attempts=_TABLE.c.attempts - 1)
        )
    return kept


def record(tx: Tx, outcomes: Sequence[Outcome]) -> None:
    """Write the outcomes of many attempts (one statement, executed for each); an outcome whose claim is
    no longer the row's (its hold ran out and the row was taken again) changes nothing."""
    if not outcomes:
        return
    statement = (
        update(_TABLE)
        .where(
            and_(
                _TABLE.c.id == bindparam("o_id"),
                _TABLE.c.attempts == bindparam("o_attempts"),
                _TABLE.c.status == "pending",
            )
        )
        .values(
            status=bindparam("o_status"),
            last_error=bindparam("o_error"),
            next_attempt_at=func.coalesce(
                bindparam("o_retry_at", type_=_TABLE.c.next_attempt_at.type), _TABLE.c.next_attempt_at
            ),
        )
    )
    tx.conn.execute(
        statement,
        [
            {
                "o_id": outcome.id,
                "o_attempts": outcome.attempts,
                "o_status": "delivered"
                if outcome.delivered
                else ("pending" if outcome.retry_at is not None else "failed"),
                "o_error": outcome.error,
                "o_retry_at": outcome.retry_at,
            }
            for outcome in outcomes
        ],
    )
