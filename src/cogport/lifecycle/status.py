"""Prediction (and training) status: the enum, the allowed transitions, and the only writer.

::

    starting ──► processing ──► succeeded
       │             ├────────► failed
       │             └────────► canceled
       ├──► canceled (canceled while queued)
       ├──► failed   (could not start: setup failed, version gone)
       └──► aborted  (Cancel-After deadline passed before it started)

:class:`Transitions` is the only code that writes ``Prediction.status`` (``transition``) and the
logs/output of a running prediction (``progress``). A transition is a compare-and-set on the status it
read (no lock needed on SQLite or PostgreSQL; a row the caller already holds is not read again), checks
the table below, stamps the timestamps and metrics, and then announces the change through hooks
registered once at start-up:

* ``within`` hooks run inside the same transaction (the terminal webhook's durable row: written with the
  terminal status or not at all); an error there rolls the whole change back and reaches the caller;
* ``after_commit`` hooks run once the change is durable (the stream hub and sync waiters, best-effort
  webhooks, counters); they must not block.

Nothing else announces: the recorder, the dispatcher and cancel only call ``transition``/``progress``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from cogport.core.jobs import clean_error
from cogport.core.status import ACTIVE, Status
from cogport.db.prepared import Prepared
from cogport.db.tables import Prediction, utcnow
from cogport.db.writer import Tx
from cogport.errors import InvalidTransition, PredictionNotFound
from cogport.lifecycle.hub import EventKind
from cogport.ops import predictions as prediction_ops

__all__ = [
    "ALLOWED",
    "UNCHANGED",
    "AfterCommitHook",
    "Announcement",
    "Transitions",
    "WithinHook",
    "lock",
    "read",
]

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5
UNCHANGED: Any = object()
"""The default ``output`` of a move: the column is left as it is (``None`` is an output: a run's that
succeeded with none)."""
PREDICTIONS = cast(Table, Prediction.__table__)
_ID, _EXPECTED = "cas_id", "cas_status"
_SET_IF_STATUS = Prepared(
    update(PREDICTIONS).where(PREDICTIONS.c.id == bindparam(_ID), PREDICTIONS.c.status == bindparam(_EXPECTED))
)
"""The compare-and-set UPDATE, built once: its SET clause is the columns of the parameters it is run with
(compiled once per set of columns). Built per call, its compile-cache key cost ~70 us a write."""
_SET_IF_ACTIVE = update(PREDICTIONS).where(PREDICTIONS.c.id == bindparam(_ID), PREDICTIONS.c.status.in_(ACTIVE))


ALLOWED: dict[Status, frozenset[Status]] = {
    Status.STARTING: frozenset({Status.PROCESSING, Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.ABORTED}),
    Status.PROCESSING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
    Status.ABORTED: frozenset(),
}


@dataclass(frozen=True)
class Announcement:
    """One change of a prediction, as the hooks hear of it."""

    prediction: Prediction
    """The row after the change."""
    kind: EventKind
    """``start`` (now processing), ``completed`` (terminal), or ``logs``/``output`` (progress)."""
    previous: Status | None = None
    """The status before a transition (None for progress)."""


WithinHook = Callable[[Tx, Announcement], None]
AfterCommitHook = Callable[[Announcement], None]


_READ = select(Prediction).where(Prediction.id == bindparam(_ID)).execution_options(populate_existing=True)
"""Built once, as the UPDATEs above."""


def read(tx: Tx, prediction_id: str) -> Prediction:
    prediction = tx.session.execute(_READ, {_ID: prediction_id}).scalar_one_or_none()
    if prediction is None:
        raise PredictionNotFound()
    return prediction


async def lock(session: AsyncSession, prediction_id: str) -> Prediction:
    """Read the row for an update that is not a status change (``SELECT ... FOR UPDATE`` on PostgreSQL)."""
    query = select(Prediction).where(Prediction.id == prediction_id)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    prediction = (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()
    if prediction is None:
        raise PredictionNotFound()
    return prediction


class Transitions:
    """The status writer and its hooks (one per app; hooks are registered at start-up).

    Its methods are operations of the group writer (:mod:`cogport.db.writer`): synchronous functions of
    a transaction, run with ``writer.run(lambda tx: transitions.transition(tx, ...))``."""

    def __init__(self) -> None:
        self._within: list[WithinHook] = []
        self._after: list[AfterCommitHook] = []

    def within(self, hook: WithinHook) -> None:
        self._within.append(hook)

    def after_commit(self, hook: AfterCommitHook) -> None:
        self._after.append(hook)

    def transition(
        self,
        tx: Tx,
        prediction: str | Prediction,
        to: Status,
        *,
        output: Any = UNCHANGED,
        logs: str | None = None,
        error: str | None = None,
        metrics: dict[str, Any] | None = None,
        started_at: datetime | None = None,
        strict: bool = False,
    ) -> tuple[Prediction, bool]:
        """Move a prediction (an id, or a row the caller holds: then it is not read first) to ``to``.
        Returns ``(row, changed)``.

        A transition that is not allowed (e.g. a late ``succeeded`` after ``canceled``) leaves the row as
        it is and returns ``changed=False``, or raises :class:`InvalidTransition` when ``strict``.
        ``started_at`` is when the model really started (the recorder writes ``processing`` a moment
        late, so that a fast prediction costs one write, not two).
        """
        row = prediction if isinstance(prediction, Prediction) else None
        prediction_id = prediction.id if isinstance(prediction, Prediction) else prediction
        for _ in range(CAS_ATTEMPTS):
            if row is None:
                row = read(tx, prediction_id)
            current = Status(row.status)
            to, error = _as_meant(row, to, error, started_at)
            if to == current and not current.is_terminal:
                changed = False
            elif to not in ALLOWED[current]:
                if strict:
                    raise InvalidTransition(f"A prediction cannot go from {current} to {to}")
                return row, False
            else:
                changed = True
            values = _changes(
                row,
                to,
                output=output,
                logs=logs,
                error=error,
                metrics=metrics,
                started_at=started_at,
            )
            # Compare-and-set on the status read (or held): a concurrent writer (a late ``processing``
            # racing the terminal write, a cancel in another process) is never overwritten.
            if _SET_IF_STATUS.execute(tx.conn, {_ID: prediction_id, _EXPECTED: current.value, **values}):
                _apply(row, values)
                if changed:
                    self._announce(tx, Announcement(row, _kind(to), current))
                return row, changed
            row = None  # it changed meanwhile: read it again
        raise InvalidTransition("The prediction kept changing while its status was being set; try again")

    def insert(
        self,
        tx: Tx,
        row: Prediction,
        to: Status = Status.STARTING,
        *,
        output: Any = UNCHANGED,
        logs: str | None = None,
        error: str | None = None,
        metrics: dict[str, Any] | None = None,
        started_at: datetime | None = None,
    ) -> Prediction:
        """Write a run the caller holds and has not written yet (a sync run started at once is written
        only once it has run a moment, or at its end: then one write makes it), already in state ``to``:
        announced as a transition from ``starting``."""
        if to != Status.STARTING:
            _apply(
                row,
                _changes(
                    row,
                    to,
                    output=output,
                    logs=logs,
                    error=error,
                    metrics=metrics,
                    started_at=started_at,
                ),
            )
        prediction_ops.insert_row(tx, row)
        if to != Status.STARTING:
            self._announce(tx, Announcement(row, _kind(to), Status.STARTING))
        return row

    def progress(self, tx: Tx, prediction: Prediction, values: dict[str, Any], kinds: Iterable[EventKind]) -> bool:
        """Write the logs/output of a running prediction (the row the caller holds) and announce ``kinds``.
        False (nothing written) once the prediction has ended."""
        result = tx.conn.execute(_SET_IF_ACTIVE, {_ID: prediction.id, **values})
        if not result.rowcount:
            return False
        _apply(prediction, values)
        for kind in kinds:
            self._announce(tx, Announcement(prediction, kind))
        return True

    def _announce(self, tx: Tx, announcement: Announcement) -> None:
        for hook in self._within:
            hook(tx, announcement)
        if self._after:
            tx.on_commit(lambda: self._after_commit(announcement))

    def _after_commit(self, announcement: Announcement) -> None:
        for hook in self._after:
            try:
                hook(announcement)
            except Exception:
                log.exception("announcing %s of %s failed", announcement.kind, announcement.prediction.id)


ABORT_ERROR = "The prediction did not start before its Cancel-After deadline"


def _as_meant(row: Prediction, to: Status, error: str | None, started_at: datetime | None) -> tuple[Status, str | None]:
    """What a move to ``to`` means for ``row``: a run stopped before it started, once its ``Cancel-After``
    deadline passed, was aborted by the deadline (whatever stopped it: the dispatcher, or the backend that
    held it in its queue), not canceled by a user; an abort says why."""
    if to == Status.CANCELED and row.started_at is None and started_at is None and _past(row.deadline):
        to = Status.ABORTED
    if to == Status.ABORTED and not error:
        error = ABORT_ERROR
    return to, error


def _past(deadline: datetime | None) -> bool:
    return deadline is not None and deadline <= utcnow()  # aware on every backend (UTCDateTime)


def _kind(to: Status) -> EventKind:
    """What a move to ``to`` announces."""
    return "completed" if to.is_terminal else "start"


def _apply(row: Prediction, values: dict[str, Any]) -> None:
    for key, value in values.items():
        set_committed_value(row, key, value)


def _changes(
    prediction: Prediction,
    to: Status,
    *,
    output: Any,
    logs: str | None,
    error: str | None,
    metrics: dict[str, Any] | None,
    started_at: datetime | None,
) -> dict[str, Any]:
    """The column values of ``prediction`` after moving to ``to`` (timestamps and metrics stamped)."""
    now = utcnow()
    values: dict[str, Any] = {"status": to.value}
    began = prediction.started_at
    if began is None and started_at is not None and to != Status.ABORTED:
        began = values["started_at"] = started_at
    if to == Status.PROCESSING and began is None:
        began = values["started_at"] = now
    if logs is not None:
        values["logs"] = logs
    if output is not UNCHANGED:
        values["output"] = output
    if to.is_terminal:
        values["completed_at"] = now
        failure = (clean_error(error) or "Prediction failed") if to == Status.FAILED else None
        if to == Status.ABORTED:
            failure = error
        values["error"] = failure
        merged = dict(prediction.metrics or {})
        merged.update(metrics or {})
        if began is not None and "predict_time" not in merged:
            merged["predict_time"] = round((now - began).total_seconds(), 6)
        merged["total_time"] = round((now - prediction.created_at).total_seconds(), 6)
        values["metrics"] = merged
        values["claimed_by"] = None
        values["lease_expires_at"] = None
    elif metrics:
        values["metrics"] = {**(prediction.metrics or {}), **metrics}
    return values
