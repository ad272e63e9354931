"""Records what a backend reports about a job: the ``JobEvents`` implementation.

Every write goes through the group writer (:mod:`cogport.db.writer`) and every status change through
:class:`~cogport.lifecycle.status.Transitions`, which announces it (hub, webhooks, counters): the recorder
announces nothing itself, except that streams hear of each event at once, before any write.

What it writes, for one job (the row it holds since the dispatcher handed the job over: never read again):

* a sync prediction started at once is handed over before its row is written: the row is written
  ``PROCESSING_WRITE_DELAY`` after it was made (as it is then: ``starting`` or ``processing``), or with
  its end if that comes first: a fast sync prediction costs one write in all;
* ``processing`` ``PROCESSING_WRITE_DELAY`` after the model started, together with the logs and output so
  far; a prediction that ends sooner costs one write, its end, with its logs folded in;
* after that, logs and output as they arrive, from a task of their own (streams hear of each event first;
  events that arrive while a write is under way are coalesced into the next one);
* the end: the terminal status, output, logs and metrics, the output files linked to the prediction, the
  model's run count, a training's new version, and (through the transition's hooks) the terminal webhook,
  all in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

from cogport.backends.base import Job
from cogport.db.engine import Database
from cogport.db.tables import Prediction, utcnow
from cogport.db.writer import GroupWriter, Tx, run_in
from cogport.lifecycle import trainings
from cogport.lifecycle.hub import Change, EventKind, Hub
from cogport.lifecycle.status import Status, Transitions
from cogport.ops import files as file_ops
from cogport.ops import predictions as prediction_ops
from cogport.settings import Settings
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

PROCESSING_WRITE_DELAY = 0.05
"""Seconds between a model starting and the row saying ``processing`` (fast predictions skip the write)."""


class RecordingFailed(Exception):
    """The end of a run could not be written (what a sync caller waiting for it is told)."""


@dataclass
class _Live:
    """What the recorder keeps for one job it records."""

    row: Prediction
    written: bool = True
    """False for a row not in the database yet (see the module docstring)."""
    logs: str = ""
    started_at: datetime | None = None
    start_timer: asyncio.TimerHandle | None = None
    """The next due write (the row itself, or ``processing``)."""
    start_written: bool = False
    pending: dict[str, Any] = field(default_factory=dict)
    """Logs/output not written yet."""
    kinds: dict[EventKind, None] = field(default_factory=dict)
    """The kinds of event to announce once they are written, in order."""
    task: asyncio.Task[None] | None = None


class Recorder:
    def __init__(
        self,
        database: Database,
        writer: GroupWriter,
        transitions: Transitions,
        hub: Hub,
        storage: Storage,
        settings: Settings,
        on_finished: Callable[[], None],
    ) -> None:
        self.database = database
        self.writer = writer
        self.transitions = transitions
        self.hub = hub
        self.storage = storage
        self.settings = settings
        self.on_finished = on_finished
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ending: set[str] = set()
        """Runs whose end is being written: still this process's (their claims are renewed) until it is."""

    def in_hand(self) -> set[str]:
        """The runs this recorder holds: recording, or writing their end."""
        return self._live.keys() | self._ending

    def hold(self, row: Prediction, *, written: bool = True) -> None:
        """The row of a job about to be submitted (the recorder writes it from now on, never reading it);
        ``written=False``: the row is not in the database yet, and the recorder writes it soon."""
        live = self._live[row.id] = _Live(row, written=written)
        if not written:
            live.start_timer = asyncio.get_running_loop().call_later(PROCESSING_WRITE_DELAY, self._start_due, live)

    def release(self, prediction_id: str) -> None:
        """Forget a job that was not submitted after all."""
        live = self._live.pop(prediction_id, None)
        if live is not None and live.start_timer is not None:
            live.start_timer.cancel()

    async def not_started(self, row: Prediction, error: str | None, *, status: Status = Status.FAILED) -> None:
        """End a job that never reached the backend or that it refused (``failed`` with ``error``, or
        ``status``: canceled or aborted before it started), written or not."""
        live = self._live.pop(row.id, None)
        if live is not None and live.start_timer is not None:
            live.start_timer.cancel()
        if live is not None and live.task is not None:
            await asyncio.shield(live.task)
        insert = live is not None and not live.written
        await self.writer.run(lambda tx: self._move(tx, row, status, insert=insert, error=error))

    def _entry(self, job: Job) -> _Live | None:
        live = self._live.get(job.prediction_id)
        if live is None:
            log.warning("an event for %s, which this process does not record", job.prediction_id)
        return live

    async def started(self, job: Job) -> None:
        """Streams hear at once; the row says ``processing`` after ``PROCESSING_WRITE_DELAY``."""
        live = self._entry(job)
        if live is None:
            return
        live.started_at = utcnow()
        self.hub.publish(Change(job.prediction_id, "start"))
        if live.start_timer is None:  # else the row's own write is due: it says processing then
            loop = asyncio.get_running_loop()
            live.start_timer = loop.call_later(PROCESSING_WRITE_DELAY, self._start_due, live)

    def _start_due(self, live: _Live) -> None:
        live.start_timer = None
        if live.task is None:
            live.task = asyncio.create_task(self._write_progress(live))

    async def _write_progress(self, live: _Live) -> None:
        """Write ``processing`` (once) and whatever logs/output are pending, until nothing is."""
        try:
            while not live.written or (live.started_at is not None and not live.start_written) or live.pending:
                values, kinds = live.pending, live.kinds
                live.pending, live.kinds = {}, {}
                if not live.written or (live.started_at is not None and not live.start_written):
                    insert = not live.written
                    live.written = True
                    live.start_written = live.started_at is not None
                    await self.writer.run(partial(self._start_write, live=live, values=values, insert=insert))
                elif values:
                    await self.writer.run(partial(self._write, live=live, values=values, kinds=list(kinds)))
        except Exception:
            log.exception("recording progress of %s failed", live.row.id)
        finally:
            live.task = None

    def _write(self, tx: Tx, *, live: _Live, values: dict[str, Any], kinds: list[EventKind]) -> None:
        self.transitions.progress(tx, live.row, values, kinds)

    def _start_write(self, tx: Tx, *, live: _Live, values: dict[str, Any], insert: bool) -> None:
        """The row's first write (``insert``: as it is now) or its ``processing`` one, with the logs and
        output so far."""
        if live.started_at is None:  # not started yet: the row as it was made
            self.transitions.insert(tx, live.row)
            return
        self._move(
            tx,
            live.row,
            Status.PROCESSING,
            insert=insert,
            logs=values.get("logs"),
            output=values.get("output"),
            set_output="output" in values,
            started_at=live.started_at,
        )

    def _move(self, tx: Tx, row: Prediction, to: Status, *, insert: bool, **changes: Any) -> tuple[Prediction, bool]:
        """Move a held row to ``to``: written by this very write when it is not in the database yet."""
        if insert:
            return self.transitions.insert(tx, row, to, **changes), True
        return self.transitions.transition(tx, row, to, **changes)

    def _progress(self, live: _Live, kind: EventKind, values: dict[str, Any]) -> None:
        live.pending.update(values)
        live.kinds[kind] = None
        if live.start_timer is None and live.task is None and live.started_at is not None:
            live.task = asyncio.create_task(self._write_progress(live))

    async def logs(self, job: Job, text: str) -> None:
        live = self._entry(job)
        if live is None:
            return
        live.logs += text
        self.hub.publish(Change(job.prediction_id, "logs", live.logs))  # streams first: latency matters
        self._progress(live, "logs", {"logs": live.logs})

    async def output(self, job: Job, output: Any) -> None:
        live = self._entry(job)
        if live is None:
            return
        self.hub.publish(Change(job.prediction_id, "output", output))
        self._progress(live, "output", {"output": output})

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
        live = self._live.pop(job.prediction_id, None)
        if live is not None:
            self._ending.add(job.prediction_id)
        try:
            if live is None:
                log.warning("the end of %s, which this process does not record", job.prediction_id)
                return
            if live.start_timer is not None:
                live.start_timer.cancel()  # the end is written instead
                live.start_timer = None
            live.start_written = True
            live.pending.clear()  # folded into the end's write
            if live.task is not None:
                await asyncio.shield(live.task)  # a write under way lands before the end's (and says written)
            # coglet's final object carries no logs on failure or cancel: keep what streamed in.
            final_logs = logs if logs and len(logs) >= len(live.logs) else live.logs
            end = _End(status, output, error, final_logs, metrics)
            if status == "succeeded" and job.spec.mode == "train" and live.written:
                await self._end_training(live, end)
            else:
                await self.writer.run(partial(self._end, live=live, end=end))
        except Exception as exc:
            log.exception("recording the end of %s failed", job.prediction_id)
            self.hub.publish(Change(job.prediction_id, "completed", RecordingFailed(str(exc))))
        finally:
            self._ending.discard(job.prediction_id)
            self.on_finished()

    def _end(self, tx: Tx, *, live: _Live, end: _End) -> None:
        """The end in one transaction: status, output, logs, metrics (and, through the hooks, the terminal
        webhook), the output files given to the prediction, the model's run count."""
        changes: dict[str, Any] = {
            "output": end.output,
            "set_output": end.status == "succeeded" or end.output is not None,
            "logs": end.logs,
            "error": end.error,
            "metrics": end.metrics,
            "started_at": live.started_at,
        }
        prediction, changed = self._move(tx, live.row, Status(end.status), insert=not live.written, **changes)
        if changed:
            file_ops.link_outputs(tx, prediction.id, prediction.account_id, prediction.output)
            prediction_ops.count_run(tx, prediction)

    async def _end_training(self, live: _Live, end: _End) -> None:
        """A training that succeeded: its trained version is made in the transaction that ends it (this
        needs file work, so it runs in a session of its own rather than the group writer), or the
        training fails saying why."""
        async with self.database.session() as session:
            status, output, error = await trainings.publish(
                session, self.storage, self.settings, live.row.id, end.output
            )
            published = _End(status, output, error, end.logs, end.metrics)
            await run_in(session, partial(self._end, live=live, end=published))


@dataclass(frozen=True)
class _End:
    status: Literal["succeeded", "failed", "canceled"]
    output: Any
    error: str | None
    logs: str
    metrics: dict[str, Any]
