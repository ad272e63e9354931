from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.api import pagination, presenters
from cogport.api.deps import Call, CallDep, SessionDep
from cogport.core.kinds import RunKind
from cogport.db.tables import Account, Model, Prediction, Version
from cogport.errors import ValidationFailed
from cogport.lifecycle.runs import DestinationResolver, Resolver, RunRequest, latest_version
from cogport.netpolicy import HostPolicy
from cogport.ops import models as model_ops
from cogport.ops import predictions as prediction_ops
from cogport.schemas.actions import PredictionCreate, RunCreate, TrainingCreate
from cogport.schemas.responses import Page

router = APIRouter(tags=["predictions"])

PreferHeader = Annotated[str | None, Header(alias="Prefer")]
CancelAfterHeader = Annotated[str | None, Header(alias="Cancel-After")]
NO_STORE = {"Cache-Control": "no-store"}


def present(call: Call, row: Prediction) -> dict[str, Any]:
    return presenters.run(row, call.base_url, call.resources.settings)


async def check_webhooks(policy: HostPolicy, body: RunCreate | TrainingCreate) -> None:
    """A webhook target the policy refuses is 422 at once; it is checked again at each send (DNS may
    change). A name that does not resolve yet is let through to that later check."""
    problems = []
    for field in ("webhook", "webhook_completed"):
        url = getattr(body, field)
        refusal = await policy.check(url) if url else None
        if refusal is not None and not refusal.retry:
            problems.append(("format", field, f"the webhook URL is refused: {refusal.reason}"))
    if problems:
        raise ValidationFailed(problems)


async def create_run(
    call: Call,
    body: RunCreate | TrainingCreate,
    resolve: Resolver,
    prefer: str | None,
    cancel_after: str | None,
    *,
    destination: DestinationResolver | None = None,
    deployment: str | None = None,
) -> JSONResponse:
    """Every create endpoint: hand the body to :meth:`Runs.create`, then answer as Replicate does."""
    await check_webhooks(call.resources.webhook_policy, body)
    created = await call.resources.runs.create(
        call.principal,
        call.base_url,
        RunRequest(
            input=body.input,
            resolve=resolve,
            webhook=body.webhook,
            webhook_completed=body.webhook_completed,
            webhook_events_filter=list(body.webhook_events_filter) if body.webhook_events_filter is not None else None,
            stream=isinstance(body, RunCreate) and bool(body.stream),
            prefer=prefer,
            cancel_after=cancel_after,
            destination=destination,
            deployment=deployment,
        ),
    )
    row = created.row
    collection = "trainings" if row.kind == RunKind.TRAINING else "predictions"
    headers = {"Location": f"{call.base_url}/v1/{collection}/{row.id}", **NO_STORE}
    body_out = present(call, row)
    status_code = 201
    if created.waited is not None:
        headers["Preference-Applied"] = created.waited
        if not created.final:
            # The clients treat anything but "starting" as final: say "starting" until it is.
            body_out["status"] = "starting"
            status_code = 202
    return JSONResponse(body_out, status_code=status_code, headers=headers)


def version_resolver(call: Call, version: str) -> Resolver:
    """``POST /v1/predictions``: the version the body names (an id, or ``owner/name[:id]``)."""

    async def resolve(session: AsyncSession) -> tuple[Model, Account, Version]:
        return await call.resources.runs.refs.resolve(session, call.principal, version)

    return resolve


def model_resolver(call: Call, owner: str, name: str) -> Resolver:
    """``POST /v1/models/{owner}/{name}/predictions``: the model's latest version."""

    async def resolve(session: AsyncSession) -> tuple[Model, Account, Version]:
        model, owner_account = await model_ops.find(session, call.principal, owner, name)
        return model, owner_account, await latest_version(session, model)

    return resolve


# The two create routes below are also answered by api/direct_creates.py, without FastAPI's routing and
# dependency solving, for every request in the shape clients send; these take the rest (and the OpenAPI).
@router.post("/v1/predictions", status_code=201)
async def create_prediction(
    body: PredictionCreate, call: CallDep, prefer: PreferHeader = None, cancel_after: CancelAfterHeader = None
) -> JSONResponse:
    return await create_run(call, body, version_resolver(call, body.version), prefer, cancel_after)


@router.post("/v1/models/{owner}/{name}/predictions", status_code=201)
async def create_model_prediction(
    owner: str,
    name: str,
    body: RunCreate,
    call: CallDep,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    return await create_run(call, body, model_resolver(call, owner, name), prefer, cancel_after)


@router.get("/v1/predictions")
async def list_predictions(
    request: Request,
    session: SessionDep,
    call: CallDep,
    cursor: str | None = Query(None),
    created_after: str | None = Query(None),
    created_before: str | None = Query(None),
    source: str | None = Query(None, pattern="^(web|api)$"),
) -> Page[dict[str, Any]]:
    return await list_runs(request, session, call, cursor, created_after, created_before, source=source)


async def list_runs(
    request: Request,
    session: AsyncSession,
    call: Call,
    cursor: str | None,
    created_after: str | None,
    created_before: str | None,
    *,
    source: str | None = None,
    kind: RunKind = RunKind.PREDICTION,
) -> Page[dict[str, Any]]:
    """A page of the caller's predictions (or trainings), newest first."""
    page = await prediction_ops.list_page(
        session,
        call.principal,
        kind=kind,
        cursor=pagination.decode(cursor),
        created_after=pagination.time_filter(created_after, "created_after"),
        created_before=pagination.time_filter(created_before, "created_before"),
        source=source,
    )
    next_url, previous_url = pagination.links(request, call.base_url, page)
    return Page(next=next_url, previous=previous_url, results=[present(call, p) for p in page.rows])


@router.get("/v1/predictions/{prediction_id}")
async def get_prediction(prediction_id: str, session: SessionDep, call: CallDep) -> JSONResponse:
    prediction = await call.resources.runs.read(session, call.principal, prediction_id)
    return JSONResponse(present(call, prediction), headers=NO_STORE)


@router.post("/v1/predictions/{prediction_id}/cancel")
async def cancel_prediction(prediction_id: str, call: CallDep) -> JSONResponse:
    return await cancel_run(call, prediction_id)


async def cancel_run(call: Call, run_id: str, *, kind: RunKind = RunKind.PREDICTION) -> JSONResponse:
    """Cancel one of the caller's predictions (or trainings); see :meth:`Runs.cancel`."""
    runs = call.resources.runs
    async with call.resources.database.session() as session:
        run = await runs.read(session, call.principal, run_id, kind=kind)
    run = await runs.cancel(run)
    return JSONResponse(present(call, run), headers=NO_STORE)
