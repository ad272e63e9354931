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

A run's end is never dropped for an outage: when the database cannot be reached (or its disk is full, see
:mod:`cogport.db.faults`) the end is written again and again, with backoff up to ``END_RETRY_MAX`` seconds,
until it is. Meanwhile the run stays in :meth:`Recorder.in_hand` (so the dispatcher keeps renewing its claim
and never takes it for lost), and sync waiters and streams hear of the end at once, from the hub, with the
row as it will be written. If the server stops first, the backend's stop gives these writes its grace
(``runtime.stop_timeout`` + 5 s) and then cancels them: each such end is logged as lost (an error line naming
the run and its status), its claim lapses, and the next housekeeping of a process that can reach the
database reports the run ``failed`` (interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm.attributes import set_committed_value

from cogport import logs
from cogport.core.backoff import doubling
from cogport.core.jobs import Job, clean_error
from cogport.core.outcome import Outcome
from cogport.core.status import Status
from cogport.db import faults
from cogport.db.engine import Database
from cogport.db.tables import Prediction, utcnow
from cogport.db.writer import GroupWriter, Tx, run_in
from cogport.errors import SetupFailed, ValidationFailed
from cogport.lifecycle import trainings
from cogport.lifecycle.hub import Change, EventKind, Hub
from cogport.lifecycle.status import PREDICTIONS, UNCHANGED, Transitions
from cogport.lifecycle.whereabouts import Place, Whereabouts
from cogport.ops import files as file_ops
from cogport.ops import predictions as prediction_ops
from cogport.settings import Settings
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

PROCESSING_WRITE_DELAY = 0.05
"""Seconds between a model starting and the row saying ``processing`` (fast predictions skip the write)."""
END_RETRY_FIRST = 0.25
END_RETRY_MAX = 5.0
"""Seconds between attempts to write a run's end while the database is out (doubling from the first)."""


class RecordingFailed(Exception):
    """The end of a run could not be written (what a sync caller waiting for it is told)."""


class Row(StrEnum):
    """How far a held run's row is written before its end: ``UNWRITTEN ──► STARTING ──► PROCESSING``, or
    ``UNWRITTEN ──► PROCESSING`` when the model started before the row's first write. A sync run started at
    once begins UNWRITTEN, any other STARTING; a first write that failed goes back to UNWRITTEN (the end
    writes the row, looking first: the insert may have landed)."""

    UNWRITTEN = "unwritten"
    """Not in the database yet (see the module docstring)."""
    STARTING = "starting"
    """Written as it was made: ``processing`` is due once the model starts."""
    PROCESSING = "processing"
    """Written ``processing`` (or its end is being written, which says it instead)."""


@dataclass
class _Live:
    """What the recorder keeps for one job it records."""

    row: Prediction
    state: Row = Row.STARTING
    logs: str = ""
    started_at: datetime | None = None
    start_timer: asyncio.TimerHandle | None = None
    """The next due write (the row itself, or ``processing``)."""
    pending: dict[str, Any] = field(default_factory=dict)
    """Logs/output not written yet."""
    kinds: dict[EventKind, None] = field(default_factory=dict)
    """The kinds of event to announce once they are written, in order."""
    task: asyncio.Task[None] | None = None

    @property
    def written(self) -> bool:
        """Whether the row is in the database."""
        return self.state is not Row.UNWRITTEN

    @property
    def row_due(self) -> bool:
        """Whether the row's own write is due: its first one, or ``processing`` once the model started."""
        return self.state is Row.UNWRITTEN or (self.state is Row.STARTING and self.started_at is not None)


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
        *,
        whereabouts: Whereabouts | None = None,
    ) -> None:
        self.whereabouts = whereabouts if whereabouts is not None else Whereabouts()
        """Where each run is (the recorder moves a run to HANDING_OVER when it holds it, to ENDING and OVER
        as its end is written)."""
        self.database = database
        self.writer = writer
        self.transitions = transitions
        self.hub = hub
        self.storage = storage
        self.settings = settings
        self.on_finished = on_finished
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ending: dict[str, Prediction] = {}
        """Runs whose end is being written: still this process's (their claims are renewed) until it is."""
        self._pending_ends: dict[str, Prediction] = {}
        """Runs whose end could not be written yet (the database is out): the row as it will be written."""

    def in_hand(self) -> set[str]:
        """The runs this recorder holds: recording, or writing their end."""
        return self._live.keys() | self._ending.keys()

    def pending_end(self, prediction_id: str) -> Prediction | None:
        """The row as the end this process could not write yet (the database is out) will make it: newer
        than the stored one, which may not even exist yet."""
        return self._pending_ends.get(prediction_id)

    def held(self, prediction_id: str) -> Prediction | None:
        """The row of a run this process records or is ending, as it holds it: the database may not hold
        it yet (a sync run started at once is written a moment later, or with its end)."""
        pending = self._pending_ends.get(prediction_id)
        if pending is not None:
            return pending
        live = self._live.get(prediction_id)
        return live.row if live is not None else self._ending.get(prediction_id)

    def hold(self, row: Prediction, *, written: bool = True) -> None:
        """The row of a job about to be submitted (the recorder writes it from now on, never reading it);
        ``written=False``: the row is not in the database yet, and the recorder writes it soon. The run is
        HANDING_OVER from now on (raises :class:`~cogport.lifecycle.whereabouts.IllegalMove` for a run held
        already: one is never handed over twice)."""
        self.whereabouts.move(row.id, Place.HANDING_OVER)
        live = self._live[row.id] = _Live(row, Row.STARTING if written else Row.UNWRITTEN)
        if not written:
            live.start_timer = asyncio.get_running_loop().call_later(PROCESSING_WRITE_DELAY, self._start_due, live)

    def release(self, prediction_id: str) -> None:
        """Forget a job that was not submitted after all (its row was never written): it is OVER here."""
        live = self._live.pop(prediction_id, None)
        if live is None:
            return
        if live.start_timer is not None:
            live.start_timer.cancel()
        self.whereabouts.move(prediction_id, Place.OVER)

    async def not_started(self, row: Prediction, error: str | None, *, status: Status = Status.FAILED) -> None:
        """End a job that never reached the backend or that it refused (``failed`` with ``error``, or
        ``status``: canceled or aborted before it started), written or not. A run whose end is written
        already, or being written (the backend finished it meanwhile), is left to that end."""
        if self.whereabouts.where(row.id) in (Place.ENDING, Place.OVER):
            return
        self.whereabouts.move(row.id, Place.ENDING)
        written = False
        try:
            live = self._live.pop(row.id, None)
            if live is not None and live.start_timer is not None:
                live.start_timer.cancel()
            if live is not None and live.task is not None:
                await asyncio.shield(live.task)
            insert = live is not None and not live.written
            await self.writer.run(lambda tx: self._move(tx, row, status, insert=insert, error=error))
            written = True
        finally:
            self.whereabouts.move(row.id, Place.OVER if written else Place.ELSEWHERE)

    @contextlib.asynccontextmanager
    async def ending_on_failure(self, prediction: Prediction) -> AsyncIterator[None]:
        """A run that cannot be handed to the backend ends ``failed``, with the reason."""
        try:
            yield
        except ValidationFailed as exc:
            await self.not_started(prediction, f"Invalid input: {exc.detail.strip()}")
        except SetupFailed as exc:
            await self.not_started(prediction, exc.detail)
        except Exception as exc:
            log.exception("submitting %s failed", prediction.id)
            await self.not_started(prediction, f"The model could not be started: {exc}")

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
        insert = False
        try:
            while live.row_due or live.pending:
                values, kinds = live.pending, live.kinds
                live.pending, live.kinds = {}, {}
                if live.row_due:
                    insert = live.state is Row.UNWRITTEN
                    live.state = Row.STARTING if live.started_at is None else Row.PROCESSING
                    await self.writer.run(partial(self._start_write, live=live, values=values, insert=insert))
                    insert = False
                elif values:
                    await self.writer.run(partial(self._write, live=live, values=values, kinds=list(kinds)))
        except Exception as exc:
            if insert:
                live.state = Row.UNWRITTEN  # the end writes the row (it looks first: the insert may have landed)
            what = faults.describe(exc)
            known = faults.is_outage(exc)
            # Progress is not kept for an outage: the end carries the logs and output. One line a minute.
            logs.failure(log, f"progress: {what}", f"recording progress failed: {what}", exc=exc, traceback=not known)
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
            output=values.get("output", UNCHANGED),
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

    async def finished(self, job: Job, outcome: Outcome) -> None:
        live = self._live.pop(job.prediction_id, None)
        if live is not None:
            self._ending[job.prediction_id] = live.row
            self.whereabouts.move(job.prediction_id, Place.ENDING)
        written = False
        try:
            if live is None:
                log.warning("the end of %s, which this process does not record", job.prediction_id)
                return
            if live.start_timer is not None:
                live.start_timer.cancel()  # the end is written instead
                live.start_timer = None
            if live.state is Row.STARTING:
                live.state = Row.PROCESSING  # the end says processing and more: no write of it is due
            live.pending.clear()  # folded into the end's write
            if live.task is not None:
                await asyncio.shield(live.task)  # a write under way lands before the end's (and says written)
            # coglet's final object carries no logs on failure or cancel: keep what streamed in.
            final_logs = outcome.logs if outcome.logs and len(outcome.logs) >= len(live.logs) else live.logs
            end = replace(outcome, logs=final_logs)
            try:
                await self._write_end(live, end, job.spec.mode)
            except Exception as exc:
                if not faults.is_outage(exc):
                    raise
                await self._end_later(live, end, job.spec.mode, exc)
            written = True
        except Exception as exc:
            log.exception("recording the end of %s failed", job.prediction_id)
            self.hub.publish(Change(job.prediction_id, "completed", RecordingFailed(str(exc))))
        finally:
            if self._ending.pop(job.prediction_id, None) is not None:
                # Not written: its claim lapses, and housekeeping queues it again or fails it.
                self.whereabouts.move(job.prediction_id, Place.OVER if written else Place.ELSEWHERE)
            self.on_finished()

    async def _write_end(self, live: _Live, end: Outcome, mode: str, *, again: bool = False) -> None:
        if end.status == "succeeded" and mode == "train" and (live.written or again):
            await self._end_training(live, end, again=again)
        else:
            await self.writer.run(partial(self._end, live=live, end=end, again=again))

    async def _end_later(self, live: _Live, end: Outcome, mode: str, error: Exception) -> None:
        """Write the end until it is written (the database is out): the run's waiters have it meanwhile."""
        prediction_id = live.row.id
        self._pending_ends[prediction_id] = _provisional(live, end)
        try:
            await self._end_until_written(live, end, mode, error)
        finally:
            self._pending_ends.pop(prediction_id, None)

    async def _end_until_written(self, live: _Live, end: Outcome, mode: str, error: Exception) -> None:
        prediction_id = live.row.id
        self.hub.publish(Change(prediction_id, "completed", self._pending_ends[prediction_id]))
        what = faults.describe(error)
        logs.failure(
            log,
            f"end: {what}",
            f"the end of {prediction_id} ({end.status}) could not be written ({what}); it is written again until "
            "the database is back (its waiters have it)",
            level=logging.WARNING,
        )
        attempts = 1
        for delay in doubling(END_RETRY_FIRST, END_RETRY_MAX):
            try:
                # The next try: after the backoff, or as soon as any write commits (the database is back).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.writer.next_commit()
                attempts += 1
                await self._write_end(live, end, mode, again=True)
            except asyncio.CancelledError:
                log.error(
                    "the end of %s (%s) was not written: the server stopped while the database was out; its claim "
                    "lapses and it will be reported failed (interrupted)",
                    prediction_id,
                    end.status,
                )
                raise
            except Exception as exc:
                if not faults.is_outage(exc):
                    raise
            else:
                log.info("the end of %s (%s) is written, at attempt %d", prediction_id, end.status, attempts)
                return

    def _end(self, tx: Tx, *, live: _Live, end: Outcome, again: bool = False) -> None:
        """The end in one transaction: status, output, logs, metrics (and, through the hooks, the terminal
        webhook), the output files given to the prediction, the model's run count.

        ``again``: an attempt after one that failed, which may have committed or not, and may have changed
        the held row in memory: the row is looked up (inserted if absent) and moved from its stored state."""
        changes: dict[str, Any] = {
            "output": end.output if end.has_output else UNCHANGED,
            "logs": end.logs,
            "error": end.error,
            "metrics": end.metrics,
            "started_at": live.started_at,
        }
        if again:
            stored = tx.conn.execute(select(PREDICTIONS.c.id).where(PREDICTIONS.c.id == live.row.id)).first()
            if stored is None:
                prediction, changed = self._move(tx, live.row, Status(end.status), insert=True, **changes)
            else:
                prediction, changed = self.transitions.transition(tx, live.row.id, Status(end.status), **changes)
        else:
            prediction, changed = self._move(tx, live.row, Status(end.status), insert=not live.written, **changes)
        if changed:
            file_ops.link_outputs(tx, prediction.id, prediction.account_id, prediction.output)
            prediction_ops.count_run(tx, prediction)

    async def _end_training(self, live: _Live, end: Outcome, *, again: bool = False) -> None:
        """A training that succeeded: its trained version is made in the transaction that ends it (this
        needs file work, so it runs in a session of its own rather than the group writer), or the
        training fails saying why."""
        async with self.database.session() as session:
            published = await trainings.publish(session, self.storage, self.settings, live.row.id, end)
            await run_in(session, partial(self._end, live=live, end=published, again=again))


def _provisional(live: _Live, end: Outcome) -> Prediction:
    """A copy of the held row as its end will make it (for waiters while the end cannot be written yet)."""
    row = live.row
    copy = Prediction()
    for attribute in inspect(Prediction).column_attrs:
        set_committed_value(copy, attribute.key, getattr(row, attribute.key))
    now = utcnow()
    metrics = dict(row.metrics or {})
    metrics.update(end.metrics)
    started = row.started_at or live.started_at
    if started is not None and "predict_time" not in metrics:
        metrics["predict_time"] = round((now - started).total_seconds(), 6)
    values: dict[str, Any] = {"status": end.status, "logs": end.logs, "completed_at": now, "metrics": metrics}
    values["started_at"] = started
    values["error"] = (clean_error(end.error) or "Prediction failed") if end.status == "failed" else None
    if end.has_output:
        values["output"] = end.output
    for key, value in values.items():
        set_committed_value(copy, key, value)
    return copy
