from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from starlette.background import BackgroundTask

from cogport.api import pagination, presenters
from cogport.api.deps import BaseUrl, CallDep, CurrentPrincipal, SessionDep
from cogport.ops import models as model_ops
from cogport.ops import versions as ops
from cogport.schemas.responses import Page, Version

router = APIRouter(tags=["versions"])


@router.get("/v1/models/{owner}/{name}/versions")
async def list_versions(
    owner: str,
    name: str,
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    cursor: str | None = Query(None),
) -> Page[Version]:
    model, _ = await model_ops.find(session, principal, owner, name)
    page = await ops.list_page(session, model, cursor=pagination.decode(cursor))
    next_url, previous_url = pagination.links(request, base_url, page)
    return Page(next=next_url, previous=previous_url, results=[presenters.version(v) for v in page.rows])


@router.get("/v1/models/{owner}/{name}/versions/{version_id}")
async def get_version(
    owner: str, name: str, version_id: str, session: SessionDep, principal: CurrentPrincipal
) -> Version:
    model, _ = await model_ops.find(session, principal, owner, name)
    return presenters.version(await ops.get(session, model, version_id))


@router.delete("/v1/models/{owner}/{name}/versions/{version_id}", status_code=202)
async def delete_version(
    owner: str,
    name: str,
    version_id: str,
    session: SessionDep,
    call: CallDep,
) -> Response:
    model, _ = await model_ops.find(session, call.principal, owner, name)
    version = await ops.get(session, model, version_id)
    await ops.request_delete(session, call.principal, model, version)
    # Wake the Janitor once the response is sent, i.e. after the request's transaction committed:
    # woken earlier, it could look before the version is marked and then sleep a whole interval.
    return Response(status_code=202, background=BackgroundTask(call.resources.services.wake, "janitor"))
