"""The playground's pages: the models you can see, a model with its versions and a form from its schema,
a prediction or training (``/p/{id}``, what ``urls.web`` points to), deployments and their instances.

Pages read through the same data operations and presenters as the API, as the signed-in caller; what
they show is what that caller could GET. Actions (run, upload, cancel) are the page's scripts calling
``/v1``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cogport.api import pagination, presenters
from cogport.api.deps import BaseUrl, ResourcesDep, SessionDep
from cogport.core.kinds import RunKind
from cogport.core.pools import deployment_of
from cogport.db.tables import Version
from cogport.errors import NotFound
from cogport.ops import deployments as deployment_ops
from cogport.ops import models as model_ops
from cogport.ops import predictions as prediction_ops
from cogport.ops import versions as version_ops
from cogport.ops.principals import Principal
from cogport.web.auth import page_principal, sign_in_redirect
from cogport.web.forms import input_fields, output_schema
from cogport.web.render import page

router = APIRouter(include_in_schema=False)

RESERVED_OWNERS = frozenset({"v1", "internal", "-"})
"""First path segments of the API and the server itself: never a model page (their 404s stay JSON)."""


def _json(value: Any) -> str:
    """Data for the page's scripts, in a ``<script type="application/json">`` (``</`` cannot end it)."""
    return json.dumps(value).replace("</", "<\\/")


def not_found(request: Request, principal: Principal | None, what: str) -> Response:
    return page(request, "not_found.html", principal, title="Not found", status_code=404, what=what)


@router.get("/")
async def index(
    request: Request, session: SessionDep, base_url: BaseUrl, cursor: str | None = Query(None, max_length=500)
) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return page(request, "sign_in.html", None, title="Sign in", next="/")
    listing = await model_ops.list_page(
        session,
        principal,
        public_only=False,
        sort_by="latest_version_created_at",
        descending=True,
        cursor=pagination.decode(cursor),
    )
    models = await presenters.models(session, listing.rows, base_url)
    next_url, _ = pagination.links(request, base_url, listing)
    return page(request, "index.html", principal, title="Models", models=models, next_url=next_url)


@router.get("/p/{prediction_id}")
async def prediction_page(
    prediction_id: str, request: Request, session: SessionDep, resources: ResourcesDep, base_url: BaseUrl
) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return sign_in_redirect(request)
    try:
        # Predictions and trainings; a run this process holds unwritten reads as it holds it.
        row = await resources.runs.read(session, principal, prediction_id, kind=None)
    except NotFound:
        return not_found(request, principal, "This prediction does not exist, or you cannot see it.")
    version = await session.get(Version, row.version_pk)
    run = presenters.run(row, base_url, resources.settings)
    kind = RunKind.TRAINING if row.kind == RunKind.TRAINING else RunKind.PREDICTION
    return page(
        request,
        "prediction.html",
        principal,
        title=f"{kind.capitalize()} {row.id}",
        run=run,
        kind=kind,
        run_json=_json(run),
        output_schema_json=_json(
            output_schema(version.openapi_schema if version and kind == RunKind.PREDICTION else None)
        ),
    )


@router.get("/deployments")
async def deployments_page(
    request: Request, session: SessionDep, base_url: BaseUrl, cursor: str | None = Query(None, max_length=500)
) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return sign_in_redirect(request)
    listing = await deployment_ops.list_page(session, principal, cursor=pagination.decode(cursor))
    details = [presenters.deployment(d) for d in await deployment_ops.details(session, listing.rows)]
    next_url, _ = pagination.links(request, base_url, listing)
    return page(request, "deployments.html", principal, title="Deployments", deployments=details, next_url=next_url)


@router.get("/deployments/{owner}/{name}")
async def deployment_page(
    owner: str, name: str, request: Request, session: SessionDep, resources: ResourcesDep
) -> Response:
    principal = await page_principal(request)
    if principal is None:
        return sign_in_redirect(request)
    try:
        deployment, owner_account = await deployment_ops.find(session, principal, owner, name)
    except NotFound:
        return not_found(request, principal, "This deployment does not exist, or you cannot see it.")
    ref = deployment_ops.ref(owner_account, deployment)
    instances = [presenters.instance(v) for v in resources.backend.instances() if deployment_of(v.pool) == ref]
    queued = await prediction_ops.count_waiting(session, ref)
    return page(
        request,
        "deployment.html",
        principal,
        title=f"Deployment {ref}",
        deployment=presenters.deployment(await deployment_ops.detail(session, deployment)),
        instances=instances,
        queued=queued,
    )


@router.get("/{owner}/{name}")
async def model_page(
    owner: str,
    name: str,
    request: Request,
    session: SessionDep,
    base_url: BaseUrl,
    version: str | None = Query(None, max_length=64),
) -> Response:
    if owner in RESERVED_OWNERS:
        raise NotFound()
    principal = await page_principal(request)
    if principal is None:
        return sign_in_redirect(request)
    try:
        model, owner_account = await model_ops.find(session, principal, owner, name)
    except NotFound:
        return not_found(request, principal, "This model does not exist, or you cannot see it.")
    versions = (await version_ops.list_page(session, model, cursor=None)).rows
    latest = (await model_ops.latest_versions(session, [model])).get(model.latest_version_pk or -1)
    chosen = latest
    if version:
        try:
            chosen = await version_ops.get(session, model, version)
        except NotFound:
            return not_found(request, principal, "This model has no such version.")
    presented = presenters.model(model, owner_account, latest, base_url)
    schema = chosen.openapi_schema if chosen is not None else None
    return page(
        request,
        "model.html",
        principal,
        title=f"{owner_account.username}/{model.name}",
        model=presented,
        versions=[presenters.version(v) for v in versions],
        chosen=chosen.id if chosen is not None else None,
        fields=input_fields(schema),
        output_schema_json=_json(output_schema(schema)),
        base_url=base_url,
    )
