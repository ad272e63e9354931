from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from cogport.api import pagination, presenters
from cogport.api.deps import BaseUrl, CallDep, CurrentPrincipal, SessionDep
from cogport.db.tables import Account, Model
from cogport.errors import BadRequest, NotFound
from cogport.ops import models as ops
from cogport.schemas.actions import ModelCreate, ModelUpdate
from cogport.schemas.responses import Model as ModelOut
from cogport.schemas.responses import Page

router = APIRouter(tags=["models"])

MAX_QUERY_BYTES = 4096


async def _present(session: SessionDep, model: Model, owner: Account, base_url: str) -> ModelOut:
    latest = await ops.latest_versions(session, [model])
    return presenters.model(model, owner, latest.get(model.latest_version_pk or -1), base_url)


@router.get("/v1/models")
async def list_models(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    sort_by: Literal["latest_version_created_at", "model_created_at"] = Query("latest_version_created_at"),
    sort_direction: Literal["asc", "desc"] = Query("desc"),
    cursor: str | None = Query(None),
) -> Page[ModelOut]:
    page = await ops.list_page(
        session,
        principal,
        public_only=True,
        sort_by=sort_by,
        descending=sort_direction == "desc",
        cursor=pagination.decode(cursor),
    )
    next_url, previous_url = pagination.links(request, base_url, page)
    return Page(next=next_url, previous=previous_url, results=await presenters.models(session, page.rows, base_url))


@router.post("/v1/models", status_code=201)
async def create_model(body: ModelCreate, session: SessionDep, call: CallDep) -> ModelOut:
    principal, base_url = call.principal, call.base_url
    fields = body.model_dump(exclude={"owner", "name", "visibility", "hardware"})
    known = {s.sku for s in call.resources.backend.hardware()}
    model, owner = await ops.create(
        session,
        principal,
        owner=body.owner,
        name=body.name,
        visibility=body.visibility,
        hardware=body.hardware,
        known_hardware=known,
        **fields,
    )
    return await _present(session, model, owner, base_url)


def _query_text(raw: bytes) -> str:
    if len(raw) > MAX_QUERY_BYTES:
        raise BadRequest(f"The search text must be at most {MAX_QUERY_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise BadRequest("The search text must be UTF-8") from exc
    stripped = text.strip()
    if stripped.startswith('"'):
        # The JS client sends the text through JSON.stringify.
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            stripped = decoded.strip()
    if not stripped:
        raise BadRequest("The search text is empty")
    if "\x00" in stripped:
        raise BadRequest("The search text must not contain NUL characters")
    return stripped


@router.api_route("/v1/models", methods=["QUERY"])
async def search_models(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    cursor: str | None = Query(None),
) -> Page[ModelOut]:
    text = _query_text(await request.body())
    page = await ops.search_page(session, principal, text, cursor=pagination.decode(cursor))
    next_url, previous_url = pagination.links(request, base_url, page)
    results = await presenters.models(session, page.rows, base_url)
    for result in results:
        # This operation's schema (unlike the Model schema) has a non-nullable description.
        result.description = result.description or ""
    return Page(next=next_url, previous=previous_url, results=results)


@router.get("/v1/models/{owner}/{name}")
async def get_model(
    owner: str, name: str, session: SessionDep, principal: CurrentPrincipal, base_url: BaseUrl
) -> ModelOut:
    model, owner_account = await ops.find(session, principal, owner, name)
    return await _present(session, model, owner_account, base_url)


@router.patch("/v1/models/{owner}/{name}")
async def update_model(
    owner: str, name: str, body: ModelUpdate, session: SessionDep, principal: CurrentPrincipal, base_url: BaseUrl
) -> ModelOut:
    model, owner_account = await ops.find_managed(session, principal, owner, name)
    await ops.update(session, model, body.model_dump(exclude_unset=True))
    return await _present(session, model, owner_account, base_url)


@router.delete("/v1/models/{owner}/{name}", status_code=204)
async def delete_model(owner: str, name: str, session: SessionDep, principal: CurrentPrincipal) -> Response:
    model, _ = await ops.find_managed(session, principal, owner, name)
    await ops.delete(session, model)
    return Response(status_code=204)


@router.get("/v1/models/{owner}/{name}/readme", response_class=PlainTextResponse)
async def get_readme(owner: str, name: str, session: SessionDep, principal: CurrentPrincipal) -> PlainTextResponse:
    model, _ = await ops.find(session, principal, owner, name)
    if not model.readme:
        raise NotFound("This model has no README")
    return PlainTextResponse(model.readme)


@router.get("/v1/models/{owner}/{name}/examples")
async def list_examples(
    owner: str, name: str, session: SessionDep, principal: CurrentPrincipal
) -> Page[dict[str, object]]:
    await ops.find(session, principal, owner, name)
    # Examples are predictions the author saved; cogport has none until example curation lands.
    return Page(next=None, previous=None, results=[])
