"""Delivering terminal webhooks from ``webhook_deliveries``: claimed in batches, sent concurrently, recorded
in batches.

Each round claims as many due deliveries as there is room for (``COGPORT_WEBHOOKS__CONCURRENCY`` in flight,
``TARGET_CONCURRENCY`` per target, none to a full target: :func:`cogport.ops.webhooks.claim`), oldest first,
and starts one task per delivery at once; a round never waits for the attempts it started. Outcomes are
written together by one flusher (whatever finished while the last write ran), and both writes go through
the group writer. So a slow or dead receiver holds only its own target's slots, and the database sees two
statements per batch, not two transactions per webhook.

Guarantees (unchanged): each terminal webhook is delivered at least once, and exactly once unless a process
dies (or its database write of the outcome fails for longer than the hold) between the receiver's answer
and the write: a claim holds the row for three times ``timeout``, after which it is due again and is sent
again with the same ``webhook-id`` (receivers dedupe on it, as Standard Webhooks asks). On PostgreSQL the
claim skips rows another process has locked (``FOR UPDATE SKIP LOCKED``), so processes sharing the
database never take the same row at once. Deliveries start in the order they fell due; they are not
serialized, so they may arrive in another order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import httpx

from cogport.db.engine import Database
from cogport.db.tables import utcnow
from cogport.db.writer import GroupWriter, Tx, run_in
from cogport.ops import webhooks as delivery_ops
from cogport.services.base import Service
from cogport.settings import WebhookSettings
from cogport.webhooks.sender import WebhookAnnouncer, retry_delay
from cogport.webhooks.targets import target_of

log = logging.getLogger(__name__)

T = TypeVar("T")
QUEUED_PER_SLOT = 4
"""Deliveries claimed per target at once, as a multiple of ``target_concurrency``: those beyond its slots
wait for one, within their attempt's deadline (so never past the claim's hold)."""
FLUSH_RETRY = 1.0
"""Seconds between tries to write outcomes while the database refuses them."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class DeliveryService(Service):
    """Delivers terminal webhooks from the database, retrying with backoff."""

    name = "webhooks"
    interval = 1.0

    def __init__(
        self,
        database: Database,
        client: httpx.AsyncClient,
        announcer: WebhookAnnouncer,
        settings: WebhookSettings,
        writer: GroupWriter | None = None,
    ) -> None:
        super().__init__()
        self.database = database
        self.client = client
        self.announcer = announcer
        self.settings = settings
        self.writer = writer
        self.hold = 3 * settings.timeout
        self._attempts: set[asyncio.Task[None]] = set()
        self._outcomes: list[delivery_ops.Outcome] = []
        self._flusher: asyncio.Task[None] | None = None
        self._outstanding: Counter[str] = Counter()
        """Claimed deliveries per target, running or waiting for a slot of their target."""
        self._limited = False
        """The last round left due work behind for lack of room: finished attempts wake the loop."""
        self._freed = 0

    async def _write(self, operation: Callable[[Tx], T]) -> T:
        if self.writer is not None:
            return await self.writer.run(operation)
        async with self.database.session() as session:
            return await run_in(session, operation)

    async def run_once(self) -> bool:
        self._freed = 0
        free = self.settings.concurrency - len(self._attempts)
        bound = QUEUED_PER_SLOT * self.settings.target_concurrency
        full = [target for target, count in self._outstanding.items() if count >= bound]
        self._limited = free <= 0 or bool(full)
        if free <= 0:
            return False
        room = {target: bound - count for target, count in self._outstanding.items()}
        limit = min(free, bound)
        claimed = await self._write(
            lambda tx: delivery_ops.claim(tx, limit=limit, hold=self.hold, per_target=bound, room=room, full=full)
        )
        for delivery in claimed:
            target = target_of(delivery.url)
            self._outstanding[target] += 1
            task = asyncio.create_task(self._attempt(delivery), name=f"cogport-webhook-{delivery.id}")
            self._attempts.add(task)
            task.add_done_callback(functools.partial(self._finished, target))
        # Claim again at once while rows come and there is room: targets that filled up are left out next time.
        more = bool(claimed) and len(self._attempts) < self.settings.concurrency
        self._limited = self._limited or len(claimed) == limit
        return more

    def _finished(self, target: str, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        self._outstanding[target] -= 1
        if self._outstanding[target] <= 0:
            del self._outstanding[target]
        self._freed += 1
        if self._limited and self._freed >= self.settings.target_concurrency:
            self.wake()  # claim again once a target's worth of slots is free, not after every attempt

    async def _attempt(self, delivery: delivery_ops.Claimed) -> None:
        # A run's intermediate webhooks still on their way go first: the terminal one is the last a receiver hears.
        await self.announcer.settled(delivery.prediction_id)
        try:
            secret = await self.announcer.secret_for(delivery.account_id)
        except Exception as exc:  # the database is away: the row is due again when its hold ends
            log.warning("webhook %s not attempted: %s", delivery.message_id, describe(exc))
            return
        failure = await self.announcer.attempt(delivery.url, secret, delivery.message_id, delivery.body)
        retry_at = None
        if failure and failure.retry:
            now = utcnow()
            delay = retry_delay(self.settings, delivery.attempts, (now - delivery.created_at).total_seconds())
            retry_at = None if delay is None else now + timedelta(seconds=delay)
        self.announcer.outcome("delivered" if failure is None else "retrying" if retry_at else "failed")
        if failure:
            log.info(
                "webhook %s attempt %d to %s failed: %s",
                delivery.message_id,
                delivery.attempts,
                delivery.url,
                failure.reason,
            )
        self._outcomes.append(
            delivery_ops.Outcome(
                delivery.id,
                delivery.attempts,
                delivered=failure is None,
                error=failure.reason if failure else None,
                retry_at=retry_at,
            )
        )
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="cogport-webhook-outcomes")

    async def _flush(self) -> None:
        """Write the outcomes gathered so far, then those that came meanwhile, until none is left."""
        try:
            while self._outcomes:
                batch, self._outcomes = self._outcomes, []
                try:
                    await self._write(functools.partial(delivery_ops.record, outcomes=batch))
                except Exception as exc:
                    self._outcomes[:0] = batch
                    log.warning("webhook outcomes not written (%s); trying again", describe(exc))
                    await asyncio.sleep(FLUSH_RETRY)
        finally:
            self._flusher = None

    async def stop(self) -> None:
        """Stop claiming; attempts under way are dropped (their rows are due again after the hold), the
        outcomes already known are written."""
        await super().stop()
        for task in list(self._attempts):
            task.cancel()
        await asyncio.gather(*self._attempts, return_exceptions=True)
        flusher = self._flusher
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        if self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await asyncio.wait_for(self._write(lambda tx: delivery_ops.record(tx, batch)), timeout=5)
            except Exception as exc:
                log.warning("%d webhook outcomes not written at shutdown: %s", len(batch), describe(exc))
