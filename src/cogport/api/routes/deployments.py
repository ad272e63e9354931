"""Replicate's deployments: create, list, get, update (a new release), delete, and predictions through one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.api import pagination, presenters
from cogport.api.deps import BaseUrl, Call, CallDep, CurrentPrincipal, SessionDep, SettingsDep
from cogport.api.routes.predictions import CancelAfterHeader, PreferHeader, create_run
from cogport.core.pools import deployment_of
from cogport.db.tables import Account, Deployment, Model, Version
from cogport.errors import InvalidVersion
from cogport.ops import deployments as ops
from cogport.ops import predictions as prediction_ops
from cogport.resources import Resources
from cogport.schemas.actions import DeploymentCreate, DeploymentUpdate, RunCreate
from cogport.schemas.responses import Deployment as DeploymentOut
from cogport.schemas.responses import Page

router = APIRouter(tags=["deployments"])
# A deployment is answered without its None members: ``created_by`` has optional, non-nullable
# ``github_url``/``avatar_url``, left out when unset (the object has no other optional member).


def _known_hardware(resources: Resources) -> set[str]:
    return {s.sku for s in resources.backend.hardware()}


async def _present(session: AsyncSession, deployment: Deployment) -> DeploymentOut:
    return presenters.deployment(await ops.detail(session, deployment))


@router.post("/v1/deployments", response_model_exclude_none=True)
async def create_deployment(body: DeploymentCreate, session: SessionDep, call: CallDep) -> DeploymentOut:
    owner, name = body.owner_and_name()
    deployment = await ops.create(
        session,
        call.principal,
        owner=owner,
        name=name,
        model_ref=body.model,
        version_id=body.version,
        config=ops.Config(body.hardware, body.min_instances, body.max_instances),
        known_hardware=_known_hardware(call.resources),
    )
    return await _present(session, deployment)


@router.get("/v1/deployments")
async def list_deployments(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    cursor: str | None = Query(None),
) -> Page[dict[str, Any]]:
    page = await ops.list_page(session, principal, cursor=pagination.decode(cursor))
    next_url, previous_url = pagination.links(request, base_url, page)
    details = await ops.details(session, page.rows)
    results = [presenters.deployment(d).model_dump(exclude_none=True) for d in details]
    return Page(next=next_url, previous=previous_url, results=results)


@router.get("/v1/deployments/{owner}/{name}", response_model_exclude_none=True)
async def get_deployment(owner: str, name: str, session: SessionDep, principal: CurrentPrincipal) -> DeploymentOut:
    deployment, _ = await ops.find(session, principal, owner, name)
    return await _present(session, deployment)


@router.patch("/v1/deployments/{owner}/{name}", response_model_exclude_none=True)
async def update_deployment(
    owner: str,
    name: str,
    body: DeploymentUpdate,
    session: SessionDep,
    call: CallDep,
) -> DeploymentOut:
    deployment, _ = await ops.find(session, call.principal, owner, name)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    await ops.release(session, call.principal, deployment, changes, _known_hardware(call.resources))
    return await _present(session, deployment)


@router.delete("/v1/deployments/{owner}/{name}", status_code=204)
async def delete_deployment(
    owner: str, name: str, session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep
) -> Response:
    deployment, owner_account = await ops.find(session, principal, owner, name)
    await ops.delete(session, deployment, owner_account, settings.deployments.offline_before_delete)
    return Response(status_code=204)


@router.post("/v1/deployments/{owner}/{name}/predictions", status_code=201)
async def create_deployment_prediction(
    owner: str,
    name: str,
    body: RunCreate,
    call: CallDep,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    """A prediction of the deployment's current version; the prediction carries ``deployment``. Also
    answered by api/direct_creates.py, for every request in the shape clients send."""
    return await create_deployment_run(call, owner, name, body, prefer, cancel_after)


async def create_deployment_run(
    call: Call, owner: str, name: str, body: RunCreate, prefer: str | None, cancel_after: str | None
) -> JSONResponse:
    used: list[int] = []

    async def resolve(session: AsyncSession) -> tuple[Model, Account, Version]:
        deployment, _ = await ops.find(session, call.principal, owner, name)
        model = await session.get(Model, deployment.model_id)
        version = await session.get(Version, deployment.version_pk)
        model_owner = await session.get(Account, model.owner_id) if model is not None else None
        if model is None or version is None or model_owner is None:
            raise InvalidVersion()
        used.append(deployment.id)
        return model, model_owner, version

    response = await create_run(call, body, resolve, prefer, cancel_after, deployment=f"{owner}/{name}")
    async with call.resources.database.session() as session:
        await ops.touch(session, used[0])
    return response


@router.get("/v1/deployments/{owner}/{name}/instances")
async def deployment_instances(owner: str, name: str, session: SessionDep, call: CallDep) -> dict[str, Any]:
    """A cogport extension: the deployment's instances now, and how many of its predictions wait to start."""
    deployment, owner_account = await ops.find(session, call.principal, owner, name)
    ref = ops.ref(owner_account, deployment)
    views = [view for view in call.resources.backend.instances() if deployment_of(view.pool) == ref]
    queued = await prediction_ops.count_waiting(session, ref)
    return {"results": [presenters.instance(view) for view in views], "queued": queued}
