"""Sending webhooks: throttled intermediate events (best effort) and durable terminal ones (retried).

``WebhookAnnouncer`` hooks into :class:`~cogport.lifecycle.status.Transitions`: its ``within`` hook writes
the terminal webhook's row in the very transaction that makes the prediction terminal (so a crash can
never leave a finished prediction without its webhook), and its ``after_commit`` hook sends the
intermediate events (``start``, throttled ``output``/``logs``) from background tasks and wakes the
sender. :class:`~cogport.webhooks.delivery.DeliveryService` delivers terminal webhooks from
``webhook_deliveries`` and retries with exponential backoff (``COGPORT_WEBHOOKS__*``: by default for an
hour, at most 5 minutes apart), so retries survive a restart. Every send goes through :meth:`attempt`: one
shared HTTP client (kept-alive connections), at most ``target_concurrency`` requests in flight per target
(:mod:`cogport.webhooks.targets`) and ``timeout`` seconds in all. Redirects are never followed (nor
retried), and sending never blocks a prediction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from cogport.core.backoff import nth
from cogport.core.status import Status
from cogport.db.engine import Database
from cogport.db.tables import Account, Prediction
from cogport.db.writer import Tx
from cogport.lifecycle.status import Announcement
from cogport.netpolicy import HostPolicy, Refusal, pinned
from cogport.ops import webhooks as delivery_ops
from cogport.settings import WebhookSettings
from cogport.webhooks import signing
from cogport.webhooks.targets import Targets, target_of
from cogport.webhooks.transport import PerTargetTransport

log = logging.getLogger(__name__)

ALL_EVENTS = ("start", "output", "logs", "completed")
THROTTLE = 0.5

Render = Callable[[Prediction], dict[str, Any]]


def new_client(settings: WebhookSettings) -> httpx.AsyncClient:
    """The one HTTP client every webhook goes through: redirects not followed, no proxy from the environment,
    and a pool of kept-alive connections per target (:mod:`cogport.webhooks.transport`), each of at most
    ``target_concurrency`` connections."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(settings.timeout, connect=min(5.0, settings.timeout)),
        transport=PerTargetTransport(settings.target_concurrency),
    )


def retry_delay(settings: WebhookSettings, attempt: int, age: float) -> float | None:
    """Seconds before attempt ``attempt + 1`` of a terminal webhook first queued ``age`` seconds ago,
    or None when retrying is over (the next attempt would come after ``retry_for``)."""
    delay = nth(settings.retry_initial, settings.retry_max_delay, attempt)
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
        settings: WebhookSettings | None = None,
    ) -> None:
        self.database = database
        self.client = client
        self.policy = policy
        self.settings = settings or WebhookSettings()
        self.targets = Targets(self.settings.target_concurrency)
        self.render = render
        self.wake_sender = wake
        self._secrets: dict[int, str] = {}
        self._loading: dict[int, asyncio.Future[str]] = {}
        self._last_sent: dict[tuple[str, str], float] = {}
        self._trailing: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._sending: dict[str, set[asyncio.Task[None]]] = {}
        """Each run's intermediate webhooks on their way (the tasks this announcer holds, by run)."""
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

    async def attempt(self, url: str, secret: str, message_id: str, body: str) -> Failure | None:
        """One attempt within ``timeout`` seconds, in a slot of its target (waited for within the time)."""
        target = target_of(url)
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                await self.targets.take(target)
                try:
                    return await post(self.client, self.policy, url, secret, message_id, body)
                finally:
                    self.targets.give(target)
        except TimeoutError:
            return Failure(f"no answer within {timeout:g}s (COGPORT_WEBHOOKS__TIMEOUT)", retry=True)

    async def secret_for(self, account_id: int) -> str:
        secret = self._secrets.get(account_id)
        if secret is None:
            # One read per account however many sends ask at once (a burst would otherwise read it per send).
            loading = self._loading.get(account_id)
            if loading is None:
                loading = self._loading[account_id] = asyncio.ensure_future(self._load_secret(account_id))
                loading.add_done_callback(lambda _: self._loading.pop(account_id, None))
            secret = await asyncio.shield(loading)
        return secret

    async def _load_secret(self, account_id: int) -> str:
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
        self._spawn(self._deliver_once(url, account_id, body), prediction.id)

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
        self._spawn(self._deliver_latest(key[0]), key[0])

    async def _deliver_latest(self, prediction_id: str) -> None:
        async with self.database.session() as session:
            prediction = await session.get(Prediction, prediction_id)
        if prediction is None or prediction.status not in ("starting", "processing"):
            return
        await self._deliver_once(prediction.webhook or "", prediction.account_id, json.dumps(self.render(prediction)))

    async def _deliver_once(self, url: str, account_id: int, body: str) -> None:
        secret = await self.secret_for(account_id)
        failure = await self.attempt(url, secret, signing.new_message_id(), body)
        self.outcome("failed" if failure else "delivered")
        if failure:
            log.info("webhook to %s failed (not retried: not terminal): %s", url, failure.reason)

    def _forget(self, prediction_id: str) -> None:
        for kind in ("output", "logs"):
            self._last_sent.pop((prediction_id, kind), None)
            handle = self._trailing.pop((prediction_id, kind), None)
            if handle is not None:
                handle.cancel()

    def _spawn(self, coro: Any, prediction_id: str) -> None:
        task = asyncio.create_task(coro)
        sending = self._sending.setdefault(prediction_id, set())
        sending.add(task)

        def done(task: asyncio.Task[None]) -> None:
            sending.discard(task)
            if not sending and self._sending.get(prediction_id) is sending:
                del self._sending[prediction_id]

        task.add_done_callback(done)

    async def settled(self, prediction_id: str) -> None:
        """Wait (within the webhook timeout) for the run's intermediate webhooks already on their way, so that
        its terminal webhook is sent after them: a receiver hears the end last."""
        sending = self._sending.get(prediction_id)
        if sending:
            await asyncio.wait(set(sending), timeout=self.settings.timeout)

    async def close(self) -> None:
        for handle in self._trailing.values():
            handle.cancel()
        for task in [task for sending in self._sending.values() for task in sending]:
            task.cancel()
