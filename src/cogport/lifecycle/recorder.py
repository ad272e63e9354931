"""Records what a backend reports about a job: the ``JobEvents`` implementation.

Every status change goes through :func:`cogport.lifecycle.status.transition`; logs and partial
output are written as they arrive (so GET shows them while the model runs). After each commit the
change is announced to the in-process hub (sync waiters, streams) and to the ``Announcer`` hooks
(webhooks).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from sqlalchemy import update

from cogport.backends.base import Job
from cogport.db.engine import Database
from cogport.db.tables import Prediction
from cogport.lifecycle import trainings
from cogport.lifecycle.hub import Change, EventKind, Hub
from cogport.lifecycle.status import Status, transition
from cogport.ops import files as file_ops
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

Announcer = Callable[[Prediction, EventKind], Awaitable[None]]


class Recorder:
    def __init__(self, database: Database, hub: Hub, storage: Storage, on_finished: Callable[[], None]) -> None:
        self.database = database
        self.storage = storage
        self.hub = hub
        self.on_finished = on_finished
        self.announcers: list[Announcer] = []
        self._logs: dict[str, str] = {}

    async def announce(self, prediction: Prediction, kind: EventKind, data: Any = None, *, hub: bool = True) -> None:
        if hub:
            self.hub.publish(Change(prediction.id, kind, data))
        for announcer in self.announcers:
            try:
                await announcer(prediction, kind)
            except Exception:
                log.exception("announcing %s of %s failed", kind, prediction.id)

    async def started(self, job: Job) -> None:
        async with self.database.session() as session:
            prediction, changed = await transition(session, job.prediction_id, Status.PROCESSING)
        if changed:
            await self.announce(prediction, "start")

    async def logs(self, job: Job, text: str) -> None:
        logs = self._logs.get(job.prediction_id, "") + text
        self._logs[job.prediction_id] = logs
        self.hub.publish(Change(job.prediction_id, "logs", logs))  # streams first: latency matters
        async with self.database.session() as session:
            await session.execute(
                update(Prediction)
                .where(Prediction.id == job.prediction_id, Prediction.status.in_(("starting", "processing")))
                .values(logs=logs)
            )
            prediction = await session.get(Prediction, job.prediction_id)
        if prediction is not None:
            await self.announce(prediction, "logs", hub=False)

    async def output(self, job: Job, output: Any) -> None:
        self.hub.publish(Change(job.prediction_id, "output", output))
        async with self.database.session() as session:
            await session.execute(
                update(Prediction)
                .where(Prediction.id == job.prediction_id, Prediction.status.in_(("starting", "processing")))
                .values(output=output)
            )
            prediction = await session.get(Prediction, job.prediction_id)
        if prediction is not None:
            await self.announce(prediction, "output", hub=False)

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
        seen = self._logs.pop(job.prediction_id, "")
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
                )
                if changed:
                    await file_ops.link_outputs(session, prediction.id, prediction.account_id, prediction.output)
        finally:
            self.on_finished()
        if changed:
            await self.announce(prediction, "completed")
