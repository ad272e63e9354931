"""Terminal webhook deliveries, durable in the database so retries survive a restart."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import WebhookDelivery, utcnow


async def enqueue(
    session: AsyncSession, *, prediction_id: str, account_id: int, url: str, body: str, message_id: str
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        message_id=message_id,
        prediction_id=prediction_id,
        account_id=account_id,
        url=url,
        body=body,
        status="pending",
        attempts=0,
        next_attempt_at=utcnow(),
        created_at=utcnow(),
    )
    session.add(delivery)
    await session.flush()
    return delivery


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
