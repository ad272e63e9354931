"""Sending webhooks: throttled intermediate events (best effort) and durable terminal ones (retried).

``WebhookAnnouncer`` hooks into :class:`~cogport.lifecycle.status.Transitions`: its ``within`` hook writes
the terminal webhook's row in the very transaction that makes the prediction terminal (so a crash can
never leave a finished prediction without its webhook), and its ``after_commit`` hook sends the
intermediate events (``start``, throttled ``output``/``logs``) from background tasks and wakes the
sender. ``DeliveryService`` delivers terminal webhooks from ``webhook_deliveries`` and retries with
exponential backoff (``COGPORT_WEBHOOKS__*``: by default for an hour, at most 5 minutes apart), so
retries survive a restart. Redirects are never followed (nor retried), and sending never blocks a
prediction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from cogport.db.engine import Database
from cogport.db.tables import Account, Prediction, WebhookDelivery, utcnow
from cogport.db.writer import Tx
from cogport.lifecycle.status import Announcement, Status
from cogport.netpolicy import HostPolicy, Refusal, pinned
from cogport.ops import webhooks as delivery_ops
from cogport.services.base import Service
from cogport.settings import WebhookSettings
from cogport.webhooks import signing

log = logging.getLogger(__name__)

ALL_EVENTS = ("start", "output", "logs", "completed")
THROTTLE = 0.5
ATTEMPT_HOLD = 30.0

Render = Callable[[Prediction], dict[str, Any]]


def retry_delay(settings: WebhookSettings, attempt: int, age: float) -> float | None:
    """Seconds before attempt ``attempt + 1`` of a terminal webhook first queued ``age`` seconds ago,
    or None when retrying is over (the next attempt would come after ``retry_for``)."""
    delay = min(settings.retry_initial * 2 ** (attempt - 1), settings.retry_max_delay)
    return delay if age + delay <= settings.retry_for else None


@dataclass(frozen=True)
class Failure:
    reason: str
    retry: bool
    """False for a redirect: it is not followed, and asking again would only be redirected again."""


async def post(
    client: httpx.AsyncClient, policy: HostPolicy, url: str, secret: str, message_id: str, body: str
) -> Failure | None:
    """One attempt; returns None on a 2xx, else what went wrong.

    The target is checked against the policy again here (it was at create time): DNS may have changed. The
    connection goes to the address just checked (:func:`~cogport.netpolicy.pinned`), not to a second answer.
    """
    verdict = await policy.admit(url)
    if isinstance(verdict, Refusal):
        return Failure(f"the webhook URL is refused: {verdict.reason}", retry=verdict.retry)
    try:
        request = pinned(client, "POST", verdict, content=body, headers=signing.headers(secret, message_id, body))
        response = await client.send(request)
    except httpx.HTTPError as exc:
        return Failure(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, retry=True)
    if 200 <= response.status_code < 300:
        return None
    if 300 <= response.status_code < 400:
        where = response.headers.get("location", "")
        return Failure(f"HTTP {response.status_code} redirect to {where!r} (redirects are not followed)", retry=False)
    return Failure(f"HTTP {response.status_code}", retry=True)


class WebhookAnnouncer:
    def __init__(
        self,
        database: Database,
        client: httpx.AsyncClient,
        render: Render,
        wake: Callable[[], None],
        policy: HostPolicy,
    ) -> None:
        self.database = database
        self.client = client
        self.policy = policy
        self.render = render
        self.wake_sender = wake
        self._secrets: dict[int, str] = {}
        self._last_sent: dict[tuple[str, str], float] = {}
        self._trailing: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_outcome: Callable[[str], None] | None = None
        """Told the outcome of every attempt (best-effort and terminal): ``delivered``, ``retrying``
        (a terminal webhook to be tried again) or ``failed`` (not tried again): the metrics' hook."""

    def outcome(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def within(self, tx: Tx, announcement: Announcement) -> None:
        """In the terminal transition's transaction: the terminal webhook's durable row."""
        prediction = announcement.prediction
        if announcement.kind != "completed" or not prediction.webhook:
            return
        if "completed" in (prediction.webhook_events_filter or ALL_EVENTS):
            delivery_ops.enqueue(
                tx,
                prediction_id=prediction.id,
                account_id=prediction.account_id,
                url=prediction.webhook,
                body=json.dumps(self.render(prediction)),
                message_id=signing.new_message_id(),
            )
            tx.on_commit(self.wake_sender)

    def after_commit(self, announcement: Announcement) -> None:
        """Once a change is durable: the best-effort intermediate events."""
        prediction, kind = announcement.prediction, announcement.kind
        if not prediction.webhook:
            return
        wanted = prediction.webhook_events_filter or ALL_EVENTS
        if kind == "completed":
            self._forget(prediction.id)
            # A fast prediction goes from starting straight to its end: its start is always sent too,
            # as it was then (processing, nothing out yet).
            if announcement.previous == Status.STARTING and prediction.started_at is not None and "start" in wanted:
                self._send_now(prediction, as_start=True)
            return
        if kind not in wanted:
            return
        if kind in ("output", "logs"):
            self._throttled(prediction, kind)
        else:
            self._send_now(prediction)

    async def secret_for(self, account_id: int) -> str:
        secret = self._secrets.get(account_id)
        if secret is None:
            async with self.database.session() as session:
                account = await session.get(Account, account_id)
            secret = account.webhook_secret if account else ""
            self._secrets[account_id] = secret
        return secret

    def _send_now(self, prediction: Prediction, *, as_start: bool = False) -> None:
        """Send the row as it is now (rendered at once, posted from a task); ``as_start``: as it was
        when it started (for a prediction whose start and end are written together)."""
        rendered = self.render(prediction)
        if as_start:
            rendered.update(status="processing", output=None, error=None)
            rendered.pop("completed_at", None)
        body = json.dumps(rendered)
        url, account_id = prediction.webhook or "", prediction.account_id
        self._spawn(self._deliver_once(url, account_id, body))

    def _throttled(self, prediction: Prediction, kind: str) -> None:
        key = (prediction.id, kind)
        now = time.monotonic()
        wait = self._last_sent.get(key, 0.0) + THROTTLE - now
        if wait <= 0:
            self._last_sent[key] = now
            self._send_now(prediction)  # the row in hand is the state now: no need to read it again
        elif key not in self._trailing:
            # A trailing send carries the state at the end of the window.
            loop = asyncio.get_running_loop()
            self._trailing[key] = loop.call_later(wait, self._fire_trailing, key)

    def _fire_trailing(self, key: tuple[str, str]) -> None:
        self._trailing.pop(key, None)
        self._last_sent[key] = time.monotonic()
        self._spawn(self._deliver_latest(key[0]))

    async def _deliver_latest(self, prediction_id: str) -> None:
        async with self.database.session() as session:
            prediction = await session.get(Prediction, prediction_id)
        if prediction is None or prediction.status not in ("starting", "processing"):
            return
        await self._deliver_once(prediction.webhook or "", prediction.account_id, json.dumps(self.render(prediction)))

    async def _deliver_once(self, url: str, account_id: int, body: str) -> None:
        secret = await self.secret_for(account_id)
        failure = await post(self.client, self.policy, url, secret, signing.new_message_id(), body)
        self.outcome("failed" if failure else "delivered")
        if failure:
            log.info("webhook to %s failed (not retried: not terminal): %s", url, failure.reason)

    def _forget(self, prediction_id: str) -> None:
        for kind in ("output", "logs"):
            self._last_sent.pop((prediction_id, kind), None)
            handle = self._trailing.pop((prediction_id, kind), None)
            if handle is not None:
                handle.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for handle in self._trailing.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()


class DeliveryService(Service):
    """Delivers terminal webhooks from the database, retrying with backoff."""

    name = "webhooks"
    interval = 1.0

    def __init__(
        self, database: Database, client: httpx.AsyncClient, announcer: WebhookAnnouncer, settings: WebhookSettings
    ) -> None:
        super().__init__()
        self.database = database
        self.client = client
        self.announcer = announcer
        self.settings = settings

    async def run_once(self) -> bool:
        async with self.database.session() as session:
            due = await delivery_ops.due(session)
        await asyncio.gather(*(self._attempt(delivery) for delivery in due))
        return len(due) >= 50

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        async with self.database.session() as session:
            if not await delivery_ops.claim(session, delivery, ATTEMPT_HOLD):
                return
        secret = await self.announcer.secret_for(delivery.account_id)
        policy = self.announcer.policy
        failure = await post(self.client, policy, delivery.url, secret, delivery.message_id, delivery.body)
        attempt = delivery.attempts + 1
        retry_at = None
        if failure and failure.retry:
            now = utcnow()
            delay = retry_delay(self.settings, attempt, (now - delivery.created_at).total_seconds())
            retry_at = None if delay is None else now + timedelta(seconds=delay)
        self.announcer.outcome("delivered" if failure is None else "retrying" if retry_at else "failed")
        if failure:
            log.info(
                "webhook %s attempt %d to %s failed: %s", delivery.message_id, attempt, delivery.url, failure.reason
            )
        async with self.database.session() as session:
            await delivery_ops.record(
                session,
                delivery.id,
                delivered=failure is None,
                error=failure.reason if failure else None,
                retry_at=retry_at,
            )
