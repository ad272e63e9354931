"""Predictions and trainings as rows: create, find, list, claim (the durable queue), recover."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import configure_mappers

from cogport.core.kinds import RunKind
from cogport.core.status import ACTIVE, Status
from cogport.db.keyset import Cursor, KeysetPage, paginate
from cogport.db.prepared import Prepared
from cogport.db.tables import Model, Prediction, Version, utcnow
from cogport.db.writer import Tx
from cogport.errors import PredictionNotFound
from cogport.identifiers import new_capability, new_object_id
from cogport.ops.leased_queue import LeasedQueue
from cogport.ops.principals import Principal

PREDICTIONS = cast(Table, Prediction.__table__)
_COLUMNS = tuple(column.key for column in PREDICTIONS.columns)
_INSERT = Prepared(insert(PREDICTIONS))
_MAPPER = Prediction.__mapper__
_BY_ID = select(Prediction).where(Prediction.id == bindparam("by_id"))
"""``GET /v1/predictions/{id}``'s query, built once (built per call, its compile-cache key is most of its cost)."""
_MODELS = cast(Table, Model.__table__)
_COUNT_RUN = Prepared(
    update(_MODELS).where(_MODELS.c.id == bindparam("model_id")).values(run_count=_MODELS.c.run_count + 1)
)
"""Built once: one built per call costs its compile-cache key each time (measured: 82 us a call, not 11)."""
RUNS = LeasedQueue(PREDICTIONS, (PREDICTIONS.c.status == Status.STARTING) & PREDICTIONS.c.claimed_by.is_(None))
"""The durable queue of runs (:mod:`cogport.ops.leased_queue`): queued while ``starting`` and unclaimed."""


def new(
    principal: Principal,
    *,
    model: Model,
    model_ref: str,
    version: Version,
    input: dict[str, Any],
    kind: str = RunKind.PREDICTION,
    webhook: str | None = None,
    webhook_events_filter: list[str] | None = None,
    deadline: datetime | None = None,
    deployment: str | None = None,
    streamable: bool = False,
    destination_model_id: int | None = None,
    claimed_by: str | None = None,
    lease: float = 0.0,
) -> Prediction:
    """A new run, not written yet (see :func:`insert_row`). ``claimed_by`` makes it already claimed by
    that node (to start it at once)."""
    now = utcnow()
    return _held(
        id=new_object_id(),
        kind=str(kind),  # the plain string, as a row read back has it
        account_id=principal.id,
        model_id=model.id,
        version_pk=version.pk,
        model_ref=model_ref,
        version_ref=version.id,
        input=input,
        output=None,
        logs="",
        status=Status.STARTING.value,
        source="api",
        created_at=now,
        metrics={},
        webhook=webhook,
        webhook_events_filter=webhook_events_filter,
        deadline=deadline,
        deployment=deployment,
        stream_token=new_capability() if streamable else None,
        destination_model_id=destination_model_id,
        claimed_by=claimed_by,
        lease_expires_at=now + timedelta(seconds=lease) if claimed_by else None,
        attempts=1 if claimed_by else 0,
        data_removed=False,
        cancel_requested=False,
        error=None,
        started_at=None,
        completed_at=None,
        output_version_pk=None,
    )


def _held(**values: Any) -> Prediction:
    """A row object with every column's value, made as the ORM makes one it loads (the values set at once,
    not one instrumented ``setattr`` and its events each: ~40 us a run). It is never added to a session:
    :func:`insert_row` writes it, and the process holds it."""
    if not _MAPPER.configured:  # Prediction() would configure the mappers: the first run here does
        configure_mappers()
    row: Prediction = _MAPPER.class_manager.new_instance()
    row.__dict__.update(values)
    return row


def insert_row(tx: Tx, prediction: Prediction) -> Prediction:
    """Write a run made by :func:`new` (one Core INSERT, a group-writer operation; the object stays
    detached: it is the row the process holds, never read again)."""
    held = prediction.__dict__  # every column is there (see ``_held``)
    _INSERT.execute(tx.conn, {key: held[key] if key in held else getattr(prediction, key) for key in _COLUMNS})
    return prediction


async def get(
    session: AsyncSession, principal: Principal, prediction_id: str, kind: str | None = RunKind.PREDICTION
) -> Prediction:
    """A prediction (or, by ``kind``, a training; ``None``: either) the caller created (anyone else gets 404)."""
    # By the key alone, the owner and kind checked here: with ``account_id``/``kind`` in the WHERE clause
    # PostgreSQL without fresh statistics scans the account's index range instead (2.5x at 100k rows).
    result = await session.execute(_BY_ID, {"by_id": prediction_id})
    prediction = result.scalar_one_or_none()
    if prediction is None or prediction.account_id != principal.id or (kind is not None and prediction.kind != kind):
        raise PredictionNotFound()
    return prediction


async def by_id(session: AsyncSession, prediction_id: str) -> Prediction | None:
    return await session.get(Prediction, prediction_id, populate_existing=True)


async def by_stream_token(session: AsyncSession, token: str) -> Prediction | None:
    result = await session.execute(select(Prediction).where(Prediction.stream_token == token))
    return result.scalar_one_or_none()


def _key(prediction: Prediction) -> tuple[Any, Any]:
    return prediction.created_at, prediction.id


async def list_page(
    session: AsyncSession,
    principal: Principal,
    *,
    kind: str = RunKind.PREDICTION,
    cursor: Cursor | None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    source: str | None = None,
    limit: int = 100,
) -> KeysetPage[Prediction]:
    query = select(Prediction).where(Prediction.account_id == principal.id, Prediction.kind == kind)
    if created_after is not None:
        query = query.where(Prediction.created_at >= created_after)
    if created_before is not None:
        query = query.where(Prediction.created_at < created_before)
    if source is not None:
        query = query.where(Prediction.source == source)
    return await paginate(
        session,
        query,
        sort=Prediction.created_at,
        tiebreak=Prediction.id,
        descending=True,
        cursor=cursor,
        limit=limit,
        key_of=_key,
    )


# --- the durable queue -------------------------------------------------------------------------


async def queued_heads(session: AsyncSession, limit: int = 64) -> list[Prediction]:
    """The oldest unclaimed prediction of each version, kind and deployment (fair: one head per queue,
    oldest first)."""
    through = func.coalesce(Prediction.deployment, "")
    oldest = (
        select(
            Prediction.version_pk,
            Prediction.kind,
            through.label("through"),
            func.min(Prediction.created_at).label("first"),
        )
        .where(Prediction.status == Status.STARTING, Prediction.claimed_by.is_(None))
        .group_by(Prediction.version_pk, Prediction.kind, through)
        .subquery()
    )
    result = await session.execute(
        select(Prediction)
        .join(
            oldest,
            and_(
                Prediction.version_pk == oldest.c.version_pk,
                Prediction.kind == oldest.c.kind,
                through == oldest.c.through,
                Prediction.created_at == oldest.c.first,
            ),
        )
        .where(Prediction.status == Status.STARTING, Prediction.claimed_by.is_(None))
        .order_by(Prediction.created_at, Prediction.id)
        .limit(limit)
    )
    return list(result.scalars())


async def queued_for(
    session: AsyncSession, version_pk: int, kind: str, limit: int, deployment: str = ""
) -> list[Prediction]:
    """The next unclaimed runs of a version and kind, through ``deployment`` (``""``: not through one):
    oldest first within each account, the accounts taking turns (the oldest run of each account, then the
    second of each, ...), so that one account's ten thousand queued runs do not starve another's one.
    With one account queuing this is plain FIFO."""
    through = Prediction.deployment == deployment if deployment else Prediction.deployment.is_(None)
    queued = (
        Prediction.version_pk == version_pk,
        Prediction.kind == kind,
        Prediction.status == Status.STARTING,
        Prediction.claimed_by.is_(None),
        through,
    )
    accounts = list(
        (await session.execute(select(Prediction.account_id).where(*queued).distinct().limit(limit))).scalars()
    )
    if len(accounts) <= 1:  # the usual case: FIFO, one query
        result = await session.execute(
            select(Prediction).where(*queued).order_by(Prediction.created_at, Prediction.id).limit(limit)
        )
        return list(result.scalars())
    # ``limit`` of each account (not a share): fewer than ``limit`` in all then means the whole queue was
    # read, which the dispatcher relies on (:class:`~cogport.lifecycle.in_hand.InHand`)
    turns: list[tuple[int, Any, str, Prediction]] = []
    for account_id in accounts:
        result = await session.execute(
            select(Prediction)
            .where(*queued, Prediction.account_id == account_id)
            .order_by(Prediction.created_at, Prediction.id)
            .limit(limit)
        )
        turns.extend((turn, row.created_at, row.id, row) for turn, row in enumerate(result.scalars()))
    turns.sort(key=lambda item: item[:3])
    return [row for *_, row in turns[:limit]]


def claim_many(tx: Tx, prediction_ids: list[str], node: str, lease: float) -> list[str]:
    """Atomically take queued predictions for ``node`` (one statement); the ids it got (someone else
    was first for the others, or they were canceled)."""
    if not prediction_ids:
        return []
    claim = RUNS.claim(prediction_ids, lease, claimed_by=node, attempts=PREDICTIONS.c.attempts + 1)
    return list(tx.conn.execute(claim).scalars())


def unclaim(tx: Tx, prediction_id: str, claimed_by: str | None) -> None:
    """Put a claimed, not yet started prediction back in the queue (if ``claimed_by`` still has it)."""
    held = (PREDICTIONS.c.status == Status.STARTING) & (PREDICTIONS.c.claimed_by == claimed_by)
    tx.conn.execute(RUNS.release([prediction_id], held, claimed_by=None))


def renew_leases(tx: Tx, node: str, ids: set[str], lease: float) -> None:
    if not ids:
        return
    tx.conn.execute(RUNS.renew(ids, lease, PREDICTIONS.c.claimed_by == node))


async def expired_claims(session: AsyncSession, node: str) -> list[Prediction]:
    """Claimed predictions whose runner may be gone: another node's whose lease ran out, and every one
    of ``node``'s (the caller keeps those it is not running)."""
    held = Prediction.status.in_(ACTIVE) & Prediction.claimed_by.is_not(None)
    result = await session.execute(select(Prediction).where(RUNS.expired(held, also=Prediction.claimed_by == node)))
    return list(result.scalars())


async def past_deadline(session: AsyncSession, limit: int = 100) -> list[Prediction]:
    result = await session.execute(
        select(Prediction).where(Prediction.status.in_(ACTIVE), Prediction.deadline < utcnow()).limit(limit)
    )
    return list(result.scalars())


async def cancel_requests(session: AsyncSession, node: str) -> list[str]:
    """Predictions this node runs that a user asked (through another process) to cancel."""
    result = await session.execute(
        select(Prediction.id).where(
            Prediction.claimed_by == node,
            Prediction.cancel_requested.is_(True),
            Prediction.status.in_(ACTIVE),
        )
    )
    return list(result.scalars())


def count_run(tx: Tx, prediction: Prediction) -> None:
    """Add a finished prediction to its model's ``run_count`` (in the transaction that ends it)."""
    if prediction.kind == RunKind.PREDICTION:
        _COUNT_RUN.execute(tx.conn, {"model_id": prediction.model_id})


async def count_waiting(session: AsyncSession, deployment: str) -> int:
    """Predictions through ``deployment`` that have not started yet (queued, or waiting for an instance)."""
    result = await session.execute(
        select(func.count())
        .select_from(Prediction)
        .where(Prediction.deployment == deployment, Prediction.status == Status.STARTING)
    )
    return int(result.scalar_one())
