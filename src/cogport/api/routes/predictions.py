from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

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
    resolve_version,
)
from cogport.ops import models as model_ops
from cogport.ops import predictions as prediction_ops
from cogport.ops.principals import Principal
from cogport.schemas import cog
from cogport.schemas.actions import PredictionCreate, RunCreate
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
    return body


async def create_run(
    request: Request,
    principal: Principal,
    base_url: str,
    body: RunCreate,
    resolve: Any,
    prefer: str | None,
    cancel_after: str | None,
) -> JSONResponse:
    """Shared by every create endpoint: validate, commit, queue, then optionally wait."""
    settings = request.app.state.settings
    runs: Runs = request.app.state.runs
    wait = parse_prefer(prefer, settings.sync_wait_max)
    deadline = deadline_after(parse_cancel_after(cancel_after))
    async with request.app.state.database.session() as session:
        model, owner, version = await resolve(session)
        checked = inputs.validate(version.openapi_schema or {}, body.input)
        # Checks the caller may use every file it names (the model gets fresh URLs at dispatch).
        await resolve_inputs(
            session, request.app.state.storage, principal, version.openapi_schema or {}, checked, base_url, settings
        )
        streamable = cog.can_stream(version.openapi_schema or {})
        if body.stream and not streamable:
            raise Unprocessable("Streaming not supported for the output type of the requested version.")
        prediction = await prediction_ops.create(
            session,
            principal,
            model=model,
            model_ref=f"{owner.username}/{model.name}",
            version=version,
            input=checked.value,
            webhook=body.webhook or body.webhook_completed,
            webhook_events_filter=list(body.webhook_events_filter)
            if body.webhook_events_filter is not None
            else (["completed"] if body.webhook_completed and not body.webhook else None),
            deadline=deadline,
            streamable=streamable,
        )
    runs.submitted()
    headers = {"Location": f"{base_url}/v1/predictions/{prediction.id}", **NO_STORE}
    status_code = 201
    if wait is not None:
        headers["Preference-Applied"] = f"wait={wait}" if prefer and "=" in prefer else "wait"
        prediction = await runs.wait(prediction.id, wait)
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
    async def resolve(session: Any) -> tuple[Model, Account, Version]:
        return await resolve_version(session, principal, body.version)

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
    async def resolve(session: Any) -> tuple[Model, Account, Version]:
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
    page = await prediction_ops.list_page(
        session,
        principal,
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
    runs: Runs = request.app.state.runs
    async with request.app.state.database.session() as session:
        prediction = await prediction_ops.get(session, principal, prediction_id)
    prediction = await runs.cancel(prediction)
    return JSONResponse(present(request, prediction, base_url), headers=NO_STORE)
