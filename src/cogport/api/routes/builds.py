"""Pushing a model directory (cogport's extension, used by ``cogport push``) and following its build.

``POST /v1/models/{owner}/{name}/versions`` takes a multipart ``source`` field holding a ``.tar.gz`` of the
model directory and answers ``201`` with a build; ``GET /v1/builds/{id}`` reports its status and log.
Pushing content the model already has is idempotent: the build is ``succeeded`` at once, same version id.
"""

from __future__ import annotations

import asyncio
import shutil

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from cogport.api import presenters
from cogport.api.deps import BaseUrl, CallDep, CurrentPrincipal, SessionDep
from cogport.build.builder import stage
from cogport.build.errors import BuildError
from cogport.db.tables import Build, Model
from cogport.errors import BadRequest, PayloadTooLarge, VersionNotFound
from cogport.identifiers import new_object_id
from cogport.ops import builds as ops
from cogport.ops import models as model_ops
from cogport.ops import versions as version_ops
from cogport.schemas.builds import Build as BuildOut
from cogport.schemas.builds import BuildUrls

router = APIRouter(tags=["builds"])


def _present(build: Build, model_ref: str, base_url: str) -> BuildOut:
    status = build.status if build.status in ("starting", "processing", "succeeded", "failed") else "starting"
    return BuildOut(
        id=build.id,
        model=model_ref,
        status=status,
        version=build.version_id if build.status == ops.SUCCEEDED else None,
        error=build.error,
        logs=build.logs,
        created_at=presenters.timestamp(build.created_at) or "",
        started_at=presenters.timestamp(build.started_at),
        completed_at=presenters.timestamp(build.completed_at),
        urls=BuildUrls(get=f"{base_url}/v1/builds/{build.id}"),
    )


async def _existing(session: SessionDep, model: Model, version_id: str) -> bool:
    try:
        await version_ops.get(session, model, version_id)
    except VersionNotFound:
        return False
    return True


@router.post("/v1/models/{owner}/{name}/versions", status_code=201)
async def push_version(
    owner: str,
    name: str,
    session: SessionDep,
    call: CallDep,
    source: UploadFile = File(..., description="A .tar.gz of the model directory (cog.yaml at its top)."),
) -> JSONResponse:
    """Push a model directory; it is built into a version in the background."""
    principal, settings, base_url = call.principal, call.resources.settings, call.base_url
    model, owner_account = await model_ops.find_managed(session, principal, owner, name)
    limit = settings.build.max_source_mb << 20
    if source.size is not None and source.size > limit:
        raise PayloadTooLarge(f"The upload is larger than {settings.build.max_source_mb} MiB")
    area = settings.data_dir / "builds" / new_object_id()
    try:
        staged = await asyncio.to_thread(stage, source.file, area / "src", settings)
    except BuildError as exc:
        await asyncio.to_thread(shutil.rmtree, area, True)
        raise BadRequest(exc.message) from None
    model_ref = f"{owner_account.username}/{model.name}"
    version_id = staged.version_id(model.id, model_ref)
    done: str | None = None
    if staged.error is not None:
        build = await ops.create(
            session, model, principal.id, version_id=version_id, source_path=None, status=ops.FAILED,
            logs=f"error: {staged.error}\n", error=staged.error,
        )  # fmt: skip
        done = "failed"
    elif await _existing(session, model, version_id):
        build = await ops.create(
            session, model, principal.id, version_id=version_id, source_path=None, status=ops.SUCCEEDED,
            logs=f"Version {version_id} already exists: nothing to build\n",
        )  # fmt: skip
        done = "succeeded"
    else:
        build = await ops.create(
            session, model, principal.id, version_id=version_id, content_id=staged.content_id,
            source_path=str(staged.source),
        )  # fmt: skip
    body = _present(build, model_ref, base_url).model_dump(mode="json")
    if done is not None:
        await asyncio.to_thread(shutil.rmtree, area, True)
        return JSONResponse(body, status_code=201)
    # Wake the builder after the response, i.e. once the build row is committed.
    return JSONResponse(body, status_code=201, background=BackgroundTask(call.resources.services.wake, "builder"))


@router.get("/v1/builds/{build_id}")
async def get_build(build_id: str, session: SessionDep, principal: CurrentPrincipal, base_url: BaseUrl) -> BuildOut:
    build, model = await ops.get_visible(session, principal, build_id)
    owner = await model_ops.owners(session, [model])
    return _present(build, f"{owner[model.owner_id].username}/{model.name}", base_url)
