"""Records what a backend reports about a job: the ``JobEvents`` implementation.

Every status change goes through :func:`cogport.lifecycle.status.transition`; logs and partial
output are written as they arrive (so GET shows them while the model runs), off the event's path
(streams hear of each event before its write; see ``_progress``). After each commit the
change is announced to the in-process hub (sync waiters, streams) and to the ``Announcer`` hooks
(webhooks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.backends.base import Job
from cogport.db.engine import Database
from cogport.db.tables import Prediction, utcnow
from cogport.lifecycle import trainings
from cogport.lifecycle.hub import Change, EventKind, Hub
from cogport.lifecycle.status import Status, transition
from cogport.ops import files as file_ops
from cogport.ops import predictions as prediction_ops
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

PROCESSING_WRITE_DELAY = 0.05
"""Seconds between a model starting and the row saying ``processing`` (fast predictions skip the write)."""

Announcer = Callable[[Prediction, EventKind], Awaitable[None]]


@dataclass
class _Pending:
    """Logs/output of a running job not written yet, and the task writing them."""

    values: dict[str, Any] = field(default_factory=dict)
    kinds: dict[EventKind, None] = field(default_factory=dict)
    """The kinds of event to announce once written, in order."""
    task: asyncio.Task[None] | None = None


class Recorder:
    def __init__(self, database: Database, hub: Hub, storage: Storage, on_finished: Callable[[], None]) -> None:
        self.database = database
        self.storage = storage
        self.hub = hub
        self.on_finished = on_finished
        self.announcers: list[Announcer] = []
        self._logs: dict[str, str] = {}
        self._started_at: dict[str, datetime] = {}
        self._start_timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress_writes: dict[str, _Pending] = {}

    async def announce(self, prediction: Prediction, kind: EventKind, data: Any = None, *, hub: bool = True) -> None:
        if hub:
            self.hub.publish(Change(prediction.id, kind, prediction if kind == "completed" and data is None else data))
        for announcer in self.announcers:
            try:
                await announcer(prediction, kind)
            except Exception:
                log.exception("announcing %s of %s failed", kind, prediction.id)

    async def started(self, job: Job) -> None:
        """Streams hear at once; the row says ``processing`` after ``PROCESSING_WRITE_DELAY``, or with the
        first logs or output, or together with the end (then a fast prediction costs one write)."""
        prediction_id = job.prediction_id
        self._started_at[prediction_id] = utcnow()
        self.hub.publish(Change(prediction_id, "start"))
        loop = asyncio.get_running_loop()
        self._start_timers[prediction_id] = loop.call_later(PROCESSING_WRITE_DELAY, self._start_due, prediction_id)

    def _start_due(self, prediction_id: str) -> None:
        if self._start_timers.pop(prediction_id, None) is not None:
            task = asyncio.create_task(self._record_start(prediction_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_start(self, prediction_id: str) -> bool:
        """Claim the pending ``processing`` write (the caller makes it); False if it is made already."""
        timer = self._start_timers.pop(prediction_id, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    async def _record_start(self, prediction_id: str) -> None:
        async with self.database.session() as session:
            prediction, changed = await self._processing(session, prediction_id)
        if changed:
            await self.announce(prediction, "start", hub=False)

    async def _processing(self, session: AsyncSession, prediction_id: str) -> tuple[Prediction, bool]:
        return await transition(
            session, prediction_id, Status.PROCESSING, started_at=self._started_at.get(prediction_id)
        )

    def _progress(self, job: Job, kind: EventKind, values: dict[str, Any]) -> None:
        """Write logs or output while the model runs (after the ``processing`` write if it is still due).

        The write happens in a task of its own, so the model's next event (streams hear of it first) is
        not held up by the database; events that come while a write is under way are coalesced into the
        next one (the latest values win). ``finished`` waits for the last write before its own.
        """
        pending = self._progress_writes.setdefault(job.prediction_id, _Pending())
        pending.values.update(values)
        pending.kinds[kind] = None
        if pending.task is None:
            pending.task = asyncio.create_task(self._write_progress(job.prediction_id, pending))

    async def _write_progress(self, prediction_id: str, pending: _Pending) -> None:
        try:
            while pending.values:
                values, kinds = pending.values, pending.kinds
                pending.values, pending.kinds = {}, {}
                if self._take_start(prediction_id):
                    await self._record_start(prediction_id)
                async with self.database.session() as session:
                    await session.execute(
                        update(Prediction)
                        .where(Prediction.id == prediction_id, Prediction.status.in_(("starting", "processing")))
                        .values(**values)
                    )
                    prediction = await session.get(Prediction, prediction_id, populate_existing=True)
                if prediction is not None:
                    for kind in kinds:
                        await self.announce(prediction, kind, hub=False)
        except Exception:
            log.exception("recording progress of %s failed", prediction_id)
        finally:
            pending.task = None

    async def logs(self, job: Job, text: str) -> None:
        logs = self._logs.get(job.prediction_id, "") + text
        self._logs[job.prediction_id] = logs
        self.hub.publish(Change(job.prediction_id, "logs", logs))  # streams first: latency matters
        self._progress(job, "logs", {"logs": logs})

    async def output(self, job: Job, output: Any) -> None:
        self.hub.publish(Change(job.prediction_id, "output", output))
        self._progress(job, "output", {"output": output})

    async def finished(
        self,
        job: Job,
        status: Literal["succeeded", "failed", "canceled"],
        *,
        output: Any,
        error: str | None,
        logs: str | None,
        metrics: dict[str, Any],
    ) -> None:
        pending = self._progress_writes.pop(job.prediction_id, None)
        if pending is not None and pending.task is not None:
            await asyncio.shield(pending.task)  # the last logs/output write lands before the end's
        seen = self._logs.pop(job.prediction_id, "")
        start_pending = self._take_start(job.prediction_id)
        started_at = self._started_at.pop(job.prediction_id, None)
        # coglet's final object carries no logs on failure or cancel: keep what streamed in.
        final_logs = logs if logs and len(logs) >= len(seen) else seen
        try:
            async with self.database.session() as session:
                if status == "succeeded" and job.spec.mode == "train":
                    # The trained version is made in this transaction, or the training fails saying why.
                    status, output, error = await trainings.publish(
                        session, self.storage, self.database.settings, job.prediction_id, output
                    )
                prediction, changed = await transition(
                    session,
                    job.prediction_id,
                    Status(status),
                    output=output,
                    set_output=status == "succeeded" or output is not None,
                    logs=final_logs,
                    error=error,
                    metrics=metrics,
                    started_at=started_at,
                )
                if changed:
                    await file_ops.link_outputs(session, prediction.id, prediction.account_id, prediction.output)
                    await prediction_ops.count_run(session, prediction)
        finally:
            self.on_finished()
        if changed:
            if start_pending and started_at is not None:
                await self.announce(prediction, "start", hub=False)  # webhooks: start is always sent
            await self.announce(prediction, "completed")
