"""The HTTP conversation with one coglet server: health, predictions (SSE or plain), cancel, shutdown.

Interpreting failures (is the model dead?) is left to :class:`~cogport.runtime.instance.Instance`:
a broken exchange comes back as :class:`Lost`, never as an exception.

Which call, SSE or a plain POST (measured, see docs/runtime.md):

* A plain POST (``post``) on a kept-alive connection (:mod:`cogport.runtime.http1`) is the cheapest call:
  used for every version without an iterator output, and where coglet refuses SSE (406: trainings, schemas
  without ``x-cog-streaming``). The model's log is relayed from coglet's own log, whose lines carry the
  prediction id, so logs still arrive as they are printed; a succeeded prediction's answer carries its whole
  log, and only a failed or canceled one (whose answer has none) waits ``LOG_DRAIN`` for the log to catch up.
* SSE (``stream``) gives iterator outputs as they happen: used where outputs stream. coglet writes SSE events
  in small TCP segments without ``TCP_NODELAY``: on a reused keep-alive connection the body waits ~40 ms for
  the client's delayed ACK (Nagle), so each SSE exchange takes a fresh connection (quick-ACK, no stall).

Why a cancel is sent more than once (coglet 0.23.1, read in its source and reproduced):

* ``POST /<endpoint>/<id>/cancel`` answers 404 until coglet has registered the id (a plain POST
  still on its way) and once it is finished.
* A 200 only means coglet passed the cancel on. Its worker drops a cancel that reaches a slot
  that has not yet begun the prediction ("Cancel called on idle slot"), and coglet emits ``start``
  *before* it hands the prediction to the worker: a cancel sent right after ``start`` is lost
  now and then (1 to 3 in 100 tight submit+cancel rounds here, more under load), and the model
  runs to its end.
* A cancel that does reach the running model must not be repeated needlessly: each one raises
  ``CancelationException`` in the model again, possibly inside its ``finally`` clean-up.

So :meth:`CogletApi.cancel` repeats the cancel (0.1 s, doubling to 1 s) until coglet accepted one
that was sent after the model had shown it was running (it printed, yielded or recorded a metric)
or at least ``CANCEL_TRUSTED_AFTER`` seconds after coglet first knew the id; the caller stops it
as soon as the prediction ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
from httpx_sse import EventSource

from cogport.core.backoff import doubling
from cogport.core.outcome import Outcome
from cogport.runtime.http1 import KeepAliveClient, TransportFailed
from cogport.runtime.logs import LogTail
from cogport.runtime.prediction import PredictionRun, exit_reason, exits_127, with_exit_reason

log = logging.getLogger(__name__)

SSE_HEADERS = {"Accept": "text/event-stream"}
NO_READ_TIMEOUT = httpx.Timeout(5.0, read=None)
LOG_DRAIN = 0.1
"""Seconds to let coglet's log catch up with an HTTP response (they travel separately)."""
EXIT_REASON_WAIT = 2.0
"""Seconds a failure that names a program exiting 127 waits for the program's own line saying why (the
loader's "error while loading shared libraries"): a subprocess's stderr reaches coglet's log after the answer."""
START_AFTER = 0.01
"""Seconds a plain POST is outstanding before the prediction counts as started (see ``post``)."""
CANCEL_RETRY_FIRST = 0.1
CANCEL_RETRY_MAX = 1.0
CONFLICT_RETRY_FIRST = 0.001
CONFLICT_RETRY_MAX = 0.05
CANCEL_TRUSTED_AFTER = 2.0
"""Seconds after coglet first knew a prediction id from which its worker has surely begun it,
so that a cancel coglet accepts then reaches the model even if the model never printed anything."""

ConflictCheck = Callable[[float], Awaitable[bool]]
"""Called with the time 409s began; True means give up (the server is broken)."""


@dataclass(frozen=True)
class Lost:
    """The exchange broke off without a final answer (connection error, early end, endless 409s)."""

    reason: str


class NotStreamable:
    """coglet refused SSE for this endpoint (406): use :meth:`CogletApi.post`."""


class CogletApi:
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        endpoint: str,
        on_conflict: ConflictCheck,
        *,
        plain_client: KeepAliveClient | None = None,
        uds: str | None = None,
    ) -> None:
        self._client = client
        self._plain_client = plain_client
        self._uds = uds
        """coglet's unix socket (a sandboxed instance): ``base_url``'s host and port are then only names."""
        """For plain POSTs: keeps connections alive (one response write: no Nagle stall)."""
        self.base_url = base_url
        self.endpoint = endpoint
        """``predictions`` or ``trainings``."""
        self._on_conflict = on_conflict

    async def health(self) -> dict[str, Any] | None:
        """``GET /health-check``; None when it cannot be reached or read."""
        try:
            response = await self._client.get(f"{self.base_url}/health-check", timeout=5.0)
            data = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def stream(self, run: PredictionRun, *, cancel_due: Callable[[], None]) -> Outcome | Lost | NotStreamable:
        """Run ``run`` with ``Accept: text/event-stream``, feeding each event to it.

        ``cancel_due`` is called after each event once coglet has announced the prediction (``start``)
        and it is canceled (it must be idempotent: it starts :meth:`cancel` once)."""
        url = f"{self.base_url}/{self.endpoint}"
        retry = _ConflictRetry(self._on_conflict)
        try:
            while True:
                if run.wants_cancel:  # canceled before coglet took it (e.g. between 409 retries)
                    return Outcome("canceled")
                async with self._client.stream("POST", url, json=_body(run), headers=SSE_HEADERS) as response:
                    if response.status_code == 409:
                        await response.aread()
                        if await retry.wait():
                            return Lost("the model server kept answering 409 (no free slot)")
                        continue
                    if response.status_code == 406:
                        await response.aread()
                        return NotStreamable()
                    if response.status_code != 200:
                        return rejected(response.status_code, await response.aread())
                    async for event in EventSource(response).aiter_sse():
                        if not event.data:  # no data, no event (the SSE spec; httpx-sse's issue 35 makes one
                            continue  # of a comment after an ``id:``, which coglet does not send)
                        outcome = await run.handle(event)
                        if outcome is not None:
                            return outcome
                        if run.started and run.wants_cancel:
                            cancel_due()
                    return Lost("the event stream ended before the prediction completed")
        except httpx.TransportError as exc:
            return Lost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    async def post(
        self, run: PredictionRun, logs: LogTail, *, cancel_due: Callable[[], None] | None = None
    ) -> Outcome | Lost:
        """Run ``run`` with a plain POST; the model's output is relayed from coglet's log meanwhile.

        ``started`` is reported once an attempt has been outstanding ``START_AFTER`` (coglet answers a
        busy slot's 409 at once, so by then the model has it), when the model first prints, or with the
        answer, whichever comes first: a prediction canceled between 409s never reports a start, and
        coglet hears of a cancel only once it may have the prediction (``cancel_due``, as for ``stream``)."""
        prediction_id = run.job.prediction_id
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        relay: asyncio.Task[None] | None = None

        def printed(text: str) -> None:
            # The relay's task is made at the model's first line: most predictions print none.
            nonlocal relay
            queue.put_nowait(text)
            if relay is None:
                relay = asyncio.create_task(_relay(run, queue))

        logs.listen(prediction_id, printed)
        try:
            result = await self._post(run, cancel_due)
            if not (isinstance(result, Outcome) and result.status == "succeeded"):
                await asyncio.sleep(LOG_DRAIN)  # the response has no log: let coglet's log catch up
            else:
                await asyncio.sleep(0)  # lines read with the answer reach the relay before it stops listening
            if isinstance(result, Outcome) and result.status == "failed":
                await _await_exit_reason(run, result)
        finally:
            logs.unlisten(prediction_id)
            if relay is not None:
                queue.put_nowait(None)
                await relay
        if isinstance(result, Outcome) and result.status == "failed":
            drained = run.streamed_logs or result.logs  # with what arrived while draining
            result = replace(result, logs=drained, error=with_exit_reason(result.error, drained or ""))
        if isinstance(result, Outcome) and result.logs:
            # What the model printed that the log pipe had not brought yet (coglet's answer came first): as a
            # logs event too, so that listeners see every line before the end.
            relayed = "".join(run.logs)
            if result.logs.startswith(relayed) and len(result.logs) > len(relayed):
                await run.add_logs(result.logs[len(relayed) :])
        if isinstance(result, Outcome) and result.output is not None and run.iterator_output:
            await run.events.output(run.job, result.output)
        return result

    async def _post(self, run: PredictionRun, cancel_due: Callable[[], None] | None = None) -> Outcome | Lost:
        url = f"{self.base_url}/{self.endpoint}"
        retry = _ConflictRetry(self._on_conflict)
        body = json.dumps(_body(run)).encode()
        try:
            while True:
                if run.wants_cancel:  # canceled before coglet took it (e.g. between 409 retries)
                    return Outcome("canceled")
                # Still outstanding after START_AFTER: not a 409, coglet has it. A timer rather than a task
                # to wait on: most answers come first, and then this costs no task.
                marking: list[asyncio.Task[None]] = []
                timer = asyncio.get_running_loop().call_later(START_AFTER, _start_later, marking, run, cancel_due)
                try:
                    status, content = await self._send(url, body)
                finally:
                    timer.cancel()
                    if marking:
                        await marking[0]  # the start is reported before anything after it
                if status != 409:
                    break
                if await retry.wait():
                    return Lost("the model server kept answering 409 (no free slot)")
        except (httpx.TransportError, TransportFailed) as exc:
            return Lost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if status != 200:
            return rejected(status, content)
        await run.mark_started()
        try:
            return run.outcome_from(json.loads(content))
        except ValueError:
            return rejected(status, content)

    async def _send(self, url: str, body: bytes) -> tuple[int, bytes]:
        if self._plain_client is not None:
            response = await self._plain_client.post_json(url, body, uds=self._uds)
            return response.status_code, response.content
        sent = await self._client.post(
            url, content=body, headers={"Content-Type": "application/json"}, timeout=NO_READ_TIMEOUT
        )
        return sent.status_code, sent.content

    async def cancel(self, run: PredictionRun) -> None:
        """Cancel ``run`` in coglet; returns once a cancel surely reached the model (see the module
        docstring). It does not wait for the prediction to end: the caller cancels this call then."""
        prediction_id = run.job.prediction_id
        url = f"{self.base_url}/{self.endpoint}/{prediction_id}/cancel"
        known_at = run.announced_at
        failures = 0
        for delay in doubling(CANCEL_RETRY_FIRST, CANCEL_RETRY_MAX):
            sent_at = time.monotonic()
            # Judged before sending: the model showed it was running *before* coglet got this cancel.
            trusted = run.model_active or (known_at is not None and sent_at - known_at >= CANCEL_TRUSTED_AFTER)
            try:
                response = await self._client.post(url, timeout=5.0)
            except httpx.HTTPError as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "%s: cancel of %s failed (retrying): %s", self.base_url, prediction_id, exc)
            else:
                log.debug("cancel of %s: HTTP %d (trusted: %s)", prediction_id, response.status_code, trusted)
                if response.status_code == 200:
                    if trusted:
                        return
                    known_at = known_at or sent_at
            # 404: not registered yet (a plain POST on its way) or finished (its end is on its way).
            await asyncio.sleep(delay)

    async def shutdown(self) -> None:
        await self._client.post(f"{self.base_url}/shutdown", timeout=2.0)


class _ConflictRetry:
    """coglet frees a slot just *after* writing the previous response, so an immediate next request
    may get 409: retry after ``CONFLICT_RETRY_FIRST`` (1 ms), doubling to ``CONFLICT_RETRY_MAX`` (50 ms), and
    ask ``check`` whether to give up."""

    def __init__(self, check: ConflictCheck) -> None:
        self._check = check
        self._since: float | None = None
        self._delays = doubling(CONFLICT_RETRY_FIRST, CONFLICT_RETRY_MAX)

    async def wait(self) -> bool:
        """Sleep before the next try; True when the caller should give up instead."""
        self._since = self._since or time.monotonic()
        if await self._check(self._since):
            return True
        await asyncio.sleep(next(self._delays))
        return False


def _body(run: PredictionRun) -> dict[str, Any]:
    return {"id": run.job.prediction_id, "input": run.job.input}


async def _await_exit_reason(run: PredictionRun, result: Outcome) -> None:
    """Wait (up to ``EXIT_REASON_WAIT``) for the line saying why a program exited 127, if the error names one."""
    if not exits_127(result.error):
        return
    deadline = time.monotonic() + EXIT_REASON_WAIT
    while time.monotonic() < deadline:
        if exit_reason(result.error, run.streamed_logs) is not None:
            return
        await asyncio.sleep(0.02)  # the relay appends to run.logs as coglet's log brings lines


def _start_later(marking: list[asyncio.Task[None]], run: PredictionRun, cancel_due: Callable[[], None] | None) -> None:
    marking.append(asyncio.ensure_future(_started(run, cancel_due)))


async def _started(run: PredictionRun, cancel_due: Callable[[], None] | None) -> None:
    await run.mark_started()
    if run.wants_cancel and cancel_due is not None:
        cancel_due()


async def _relay(run: PredictionRun, queue: asyncio.Queue[str | None]) -> None:
    while (text := await queue.get()) is not None:
        await run.mark_started()  # it prints: it runs
        await run.add_logs(text)


def rejected(status: int, body: bytes) -> Outcome:
    """A prediction coglet refused to run: 422 is invalid input, anything else is unexpected."""
    if status == 422:
        try:
            detail = json.loads(body)["detail"]
            problems = [f"{'.'.join(str(p) for p in item['loc'][2:]) or 'input'}: {item['msg']}" for item in detail]
            return Outcome("failed", error="Invalid input: " + "; ".join(problems))
        except (ValueError, KeyError, TypeError):
            pass
    text = body.decode("utf-8", "replace").strip()[:500]
    return Outcome("failed", error=f"The model server refused the prediction (HTTP {status}): {text}")
