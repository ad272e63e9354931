"""Terminal webhook deliveries, durable in the database so retries survive a restart."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import WebhookDelivery, utcnow
from cogport.db.writer import Tx


def enqueue(tx: Tx, *, prediction_id: str, account_id: int, url: str, body: str, message_id: str) -> None:
    """Queue a terminal webhook (a group-writer operation: in the transaction that ends the prediction)."""
    now = utcnow()
    tx.conn.execute(
        insert(cast(Table, WebhookDelivery.__table__)).values(
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


async def due(session: AsyncSession, limit: int = 50) -> list[WebhookDelivery]:
    result = await session.execute(
        select(WebhookDelivery)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(result.scalars())


async def claim(session: AsyncSession, delivery: WebhookDelivery, hold: float) -> bool:
    """Take a due delivery for one attempt; if this process dies mid-attempt, it is due again after ``hold``."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
        )
        .values(next_attempt_at=utcnow() + timedelta(seconds=hold), attempts=WebhookDelivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record(
    session: AsyncSession, delivery_id: int, *, delivered: bool, error: str | None, retry_at: datetime | None
) -> None:
    status = "delivered" if delivered else ("pending" if retry_at is not None else "failed")
    values: dict[str, object] = {"status": status, "last_error": error}
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values))
