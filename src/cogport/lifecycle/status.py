"""Prediction (and training) status: the enum, the allowed transitions, and the only writer.

::

    starting ──► processing ──► succeeded
       │             ├────────► failed
       │             └────────► canceled
       ├──► canceled (canceled while queued)
       ├──► failed   (could not start: setup failed, version gone)
       └──► aborted  (Cancel-After deadline passed before it started)

``transition()`` is the only code that writes ``Prediction.status``. It locks the row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers), checks the table below,
stamps the timestamps and metrics, and returns the updated row. Side effects (webhooks, stream
events) are emitted by the caller from the returned row.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from cogport.backends.base import clean_error
from cogport.db.tables import Prediction, utcnow
from cogport.errors import InvalidTransition, PredictionNotFound

__all__ = ["ALLOWED", "TERMINAL", "Status", "clean_error", "transition"]

CAS_ATTEMPTS = 5


class Status(StrEnum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.ABORTED})

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.STARTING: frozenset({Status.PROCESSING, Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.ABORTED}),
    Status.PROCESSING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
    Status.ABORTED: frozenset(),
}


async def lock(session: AsyncSession, prediction_id: str) -> Prediction:
    query = select(Prediction).where(Prediction.id == prediction_id)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    prediction = (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()
    if prediction is None:
        raise PredictionNotFound()
    return prediction


async def transition(
    session: AsyncSession,
    prediction_id: str,
    to: Status,
    *,
    output: Any = None,
    set_output: bool = False,
    logs: str | None = None,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
    started_at: datetime | None = None,
    strict: bool = False,
) -> tuple[Prediction, bool]:
    """Move a prediction to ``to``. Returns ``(row, changed)``.

    A transition that is not allowed (e.g. a late ``succeeded`` after ``canceled``) leaves the row as
    it is and returns ``changed=False``, or raises :class:`InvalidTransition` when ``strict``.
    ``started_at`` is when the model really started (the recorder writes ``processing`` a moment
    late, so that a fast prediction costs one write, not two).
    """
    for _ in range(CAS_ATTEMPTS):
        prediction = await lock(session, prediction_id)
        current = Status(prediction.status)
        if to == current and not current.is_terminal:
            changed = False
        elif to not in ALLOWED[current]:
            if strict:
                raise InvalidTransition(f"A prediction cannot go from {current} to {to}")
            return prediction, False
        else:
            changed = True
        values = _changes(
            prediction,
            to,
            output=output,
            set_output=set_output,
            logs=logs,
            error=error,
            metrics=metrics,
            started_at=started_at,
        )
        # Compare-and-set on the status read above: SQLite has no row locks, so a concurrent writer
        # (e.g. a late ``processing`` racing the terminal write) must not be overwritten.
        result = await session.execute(
            update(Prediction)
            .where(Prediction.id == prediction_id, Prediction.status == current.value)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            for key, value in values.items():
                set_committed_value(prediction, key, value)
            return prediction, changed
    raise InvalidTransition("The prediction kept changing while its status was being set; try again")


def _changes(
    prediction: Prediction,
    to: Status,
    *,
    output: Any,
    set_output: bool,
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
    if set_output:
        values["output"] = output
    if to.is_terminal:
        values["completed_at"] = now
        failure = (clean_error(error) or "Prediction failed") if to == Status.FAILED else None
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
