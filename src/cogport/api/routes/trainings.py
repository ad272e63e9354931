"""Trainings: ``train()`` of a base version on the caller's input, published as a version of a destination.

A training is a prediction row with ``kind="training"``: creation goes through the predictions'
:func:`~cogport.api.routes.predictions.create_run` (validation against ``TrainingInput``, file inputs,
webhooks, ``Prefer: wait``), and the dispatcher, recorder, cancel and crash recovery are the predictions'.
What is particular to trainings happens when one succeeds: see :mod:`cogport.lifecycle.trainings`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.api.deps import CallDep, SessionDep
from cogport.api.routes.predictions import (
    NO_STORE,
    CancelAfterHeader,
    PreferHeader,
    cancel_run,
    create_run,
    list_runs,
    present,
)
from cogport.core.kinds import RunKind
from cogport.db.tables import Account, Model, Version
from cogport.ops import models as model_ops
from cogport.ops import trainings as training_ops
from cogport.ops import versions as version_ops
from cogport.schemas.actions import TrainingCreate
from cogport.schemas.responses import Page

router = APIRouter(tags=["trainings"])


@router.post("/v1/models/{owner}/{name}/versions/{version_id}/trainings", status_code=201)
async def create_training(
    owner: str,
    name: str,
    version_id: str,
    body: TrainingCreate,
    call: CallDep,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    async def resolve(session: AsyncSession) -> tuple[Model, Account, Version]:
        model, owner_account = await model_ops.find(session, call.principal, owner, name)
        version = await version_ops.get(session, model, version_id)
        training_ops.require_trainable(f"{owner_account.username}/{model.name}", version)
        return model, owner_account, version

    async def destination(session: AsyncSession) -> Model:
        model, _ = await training_ops.find_destination(session, call.principal, body.destination)
        return model

    return await create_run(call, body, resolve, prefer, cancel_after, destination=destination)


@router.get("/v1/trainings")
async def list_trainings(
    request: Request,
    session: SessionDep,
    call: CallDep,
    cursor: str | None = Query(None),
    created_after: str | None = Query(None),
    created_before: str | None = Query(None),
) -> Page[dict[str, Any]]:
    return await list_runs(request, session, call, cursor, created_after, created_before, kind=RunKind.TRAINING)


@router.get("/v1/trainings/{training_id}")
async def get_training(training_id: str, session: SessionDep, call: CallDep) -> JSONResponse:
    training = await call.resources.runs.read(session, call.principal, training_id, kind=RunKind.TRAINING)
    return JSONResponse(present(call, training), headers=NO_STORE)


@router.post("/v1/trainings/{training_id}/cancel")
async def cancel_training(training_id: str, call: CallDep) -> JSONResponse:
    return await cancel_run(call, training_id, kind=RunKind.TRAINING)
