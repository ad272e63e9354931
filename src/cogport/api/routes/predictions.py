from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.api import pagination, presenters
from cogport.api.deps import BaseUrl, CurrentPrincipal, SessionDep
from cogport.db.tables import Account, Model, Prediction, Version
from cogport.errors import Unprocessable
from cogport.files import urls as file_urls
from cogport.lifecycle import inputs
from cogport.lifecycle.files_in import resolve_inputs
from cogport.lifecycle.runs import (
    Runs,
    deadline_after,
    latest_version,
    parse_cancel_after,
    parse_prefer,
)
from cogport.ops import models as model_ops
from cogport.ops import predictions as prediction_ops
from cogport.ops.principals import Principal
from cogport.schemas import cog
from cogport.schemas.actions import PredictionCreate, RunCreate, TrainingCreate
from cogport.schemas.responses import Page

router = APIRouter(tags=["predictions"])

STREAM_PATH = "/v1/streams"
PreferHeader = Annotated[str | None, Header(alias="Prefer")]
CancelAfterHeader = Annotated[str | None, Header(alias="Cancel-After")]
NO_STORE = {"Cache-Control": "no-store"}


def present(request: Request, row: Prediction, base_url: str) -> dict[str, Any]:
    settings = request.app.state.settings
    body = presenters.prediction(row, base_url, aborted_as=settings.aborted_status, stream_path=STREAM_PATH)
    body["output"] = file_urls.rebase_outputs(body["output"], settings, base_url)
    if row.kind == "training" and not isinstance(body["output"], dict):
        del body["output"]  # the spec types a training's output as an object: none until there is one
    return body


Resolver = Callable[[AsyncSession], Awaitable[tuple[Model, Account, Version]]]
"""Finds the version to run (and its model and owner) inside the create transaction."""
DestinationResolver = Callable[[AsyncSession], Awaitable[Model]]
"""For trainings: finds the model the trained version goes to, inside the create transaction."""


async def create_run(
    request: Request,
    principal: Principal,
    base_url: str,
    body: RunCreate | TrainingCreate,
    resolve: Resolver,
    prefer: str | None,
    cancel_after: str | None,
    *,
    destination: DestinationResolver | None = None,
) -> JSONResponse:
    """Shared by every create endpoint: validate, commit, queue, then optionally wait.

    With ``destination`` the run is a training: its input is checked against ``TrainingInput`` and the
    row (``kind="training"``) remembers the destination model.
    """
    settings = request.app.state.settings
    runs: Runs = request.app.state.runs
    wait = parse_prefer(prefer, settings.sync_wait_max)
    deadline = deadline_after(parse_cancel_after(cancel_after))
    async with request.app.state.database.session() as session:
        model, owner, version = await resolve(session)
        target = await destination(session) if destination is not None else None
        schema = version.openapi_schema or {}
        checked = inputs.validate(schema, body.input, component_name="Input" if target is None else "TrainingInput")
        # Checks the caller may use every file it names (the model gets fresh URLs at dispatch).
        await resolve_inputs(session, request.app.state.storage, principal, schema, checked, base_url, settings)
        streamable = target is None and cog.can_stream(schema)
        kind = "prediction" if target is None else "training"
        if isinstance(body, RunCreate) and body.stream and not streamable:
            raise Unprocessable("Streaming not supported for the output type of the requested version.")
        prediction = await prediction_ops.create(
            session,
            principal,
            model=model,
            model_ref=f"{owner.username}/{model.name}",
            version=version,
            input=checked.value,
            kind=kind,
            webhook=body.webhook or body.webhook_completed,
            webhook_events_filter=list(body.webhook_events_filter)
            if body.webhook_events_filter is not None
            else (["completed"] if body.webhook_completed and not body.webhook else None),
            deadline=deadline,
            streamable=streamable,
            destination_model_id=None if target is None else target.id,
            # Sync mode with a free slot: start it now rather than through the queue.
            claimed_by=runs.node if wait is not None and runs.can_start_now(version, kind) else None,
            lease=settings.lease_seconds,
        )
    if prediction.claimed_by is not None:
        await runs.start_claimed(prediction, version)
    else:
        runs.submitted()
    collection = "predictions" if target is None else "trainings"
    headers = {"Location": f"{base_url}/v1/{collection}/{prediction.id}", **NO_STORE}
    status_code = 201
    if wait is not None:
        headers["Preference-Applied"] = f"wait={wait}" if prefer and "=" in prefer else "wait"
        prediction = await runs.wait(prediction.id, wait, current=prediction)
        body_out = present(request, prediction, base_url)
        if prediction.status not in ("succeeded", "failed", "canceled", "aborted"):
            # The clients treat anything but "starting" as final: say "starting" until it is.
            body_out["status"] = "starting"
            status_code = 202
        return JSONResponse(body_out, status_code=status_code, headers=headers)
    return JSONResponse(present(request, prediction, base_url), status_code=status_code, headers=headers)


@router.post("/v1/predictions", status_code=201)
async def create_prediction(
    body: PredictionCreate,
    request: Request,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    async def resolve(session: AsyncSession) -> tuple[Model, Account, Version]:
        runs: Runs = request.app.state.runs
        return await runs.refs.resolve(session, principal, body.version)

    return await create_run(request, principal, base_url, body, resolve, prefer, cancel_after)


@router.post("/v1/models/{owner}/{name}/predictions", status_code=201)
async def create_model_prediction(
    owner: str,
    name: str,
    body: RunCreate,
    request: Request,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    async def resolve(session: AsyncSession) -> tuple[Model, Account, Version]:
        model, owner_account = await model_ops.find(session, principal, owner, name)
        return model, owner_account, await latest_version(session, model)

    return await create_run(request, principal, base_url, body, resolve, prefer, cancel_after)


@router.get("/v1/predictions")
async def list_predictions(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    cursor: str | None = Query(None),
    created_after: datetime | None = Query(None),
    created_before: datetime | None = Query(None),
    source: str | None = Query(None, pattern="^(web|api)$"),
) -> Page[dict[str, Any]]:
    return await list_runs(request, session, principal, base_url, cursor, created_after, created_before, source=source)


async def list_runs(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    base_url: str,
    cursor: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    *,
    source: str | None = None,
    kind: str = "prediction",
) -> Page[dict[str, Any]]:
    """A page of the caller's predictions (or trainings), newest first."""
    page = await prediction_ops.list_page(
        session,
        principal,
        kind=kind,
        cursor=pagination.decode(cursor),
        created_after=created_after,
        created_before=created_before,
        source=source,
    )
    next_url, previous_url = pagination.links(request, base_url, page)
    return Page(next=next_url, previous=previous_url, results=[present(request, p, base_url) for p in page.rows])


@router.get("/v1/predictions/{prediction_id}")
async def get_prediction(
    prediction_id: str, request: Request, session: SessionDep, principal: CurrentPrincipal, base_url: BaseUrl
) -> JSONResponse:
    prediction = await prediction_ops.get(session, principal, prediction_id)
    return JSONResponse(present(request, prediction, base_url), headers=NO_STORE)


@router.post("/v1/predictions/{prediction_id}/cancel")
async def cancel_prediction(
    prediction_id: str, request: Request, principal: CurrentPrincipal, base_url: BaseUrl
) -> JSONResponse:
    return await cancel_run(request, principal, base_url, prediction_id)


async def cancel_run(
    request: Request, principal: Principal, base_url: str, run_id: str, *, kind: str = "prediction"
) -> JSONResponse:
    """Cancel one of the caller's predictions (or trainings); see :meth:`Runs.cancel`."""
    runs: Runs = request.app.state.runs
    async with request.app.state.database.session() as session:
        run = await prediction_ops.get(session, principal, run_id, kind=kind)
    run = await runs.cancel(run)
    return JSONResponse(present(request, run, base_url), headers=NO_STORE)
