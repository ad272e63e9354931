"""Model output files: coglet's upload receiver and the capability URLs that serve what it received.

``PUT /internal/uploads/{token}/{name}`` is what a coglet instance started with
``--upload-url {internal}/internal/uploads/{token}/`` sends each output file to. It answers 201 with
``Location: {public}/v1/files/outputs/{id}/{access token}/{name}``, the URL that then appears in the
prediction's output. Those URLs work with or without a bearer header (the Python client sends one to
every host, the JS client none): the token in the path is the capability.
"""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from cogport.api.deps import ResourcesDep, SessionDep
from cogport.api.file_bodies import file_response
from cogport.errors import FileNotFound, Forbidden
from cogport.files.media import safe_name
from cogport.files.urls import OUTPUTS_PATH, UPLOADS_PATH
from cogport.lifecycle.files_out import store_output
from cogport.ops import files as ops

router = APIRouter(tags=["files"])

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def is_loopback(request: Request) -> bool:
    """Whether the request comes straight from this machine (and not through a proxy that says so)."""
    host = request.client.host if request.client else ""
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    return host in LOOPBACK or host.startswith("127.")


@router.put(f"{UPLOADS_PATH}/{{token}}/{{filename:path}}", status_code=201, include_in_schema=False)
async def receive_output(token: str, filename: str, request: Request, resources: ResourcesDep) -> Response:
    if not is_loopback(request):
        raise Forbidden("The upload receiver only takes requests from this machine")
    if not resources.upload_tokens.is_valid(token):
        raise Forbidden("The upload token is not valid")
    name = safe_name(filename)
    header_type = request.headers.get("content-type", "").strip()
    try:
        url = await store_output(
            resources.database,
            resources.storage,
            resources.settings,
            name=name,
            content_type=header_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
            chunks=request.stream(),
        )
    except ClientDisconnect:  # the sender gave up (a sandbox's upload over its bound): nothing was kept
        return Response(status_code=400)
    return Response(status_code=201, headers={"Location": url})


@router.api_route(f"{OUTPUTS_PATH}/{{file_id}}/{{token}}/{{name}}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_output(
    file_id: str, token: str, name: str, request: Request, session: SessionDep, resources: ResourcesDep
) -> Response:
    row = await ops.output_by_capability(session, file_id, token)
    if row is None:
        raise FileNotFound()
    return await file_response(request, resources.storage, row, cache="private, max-age=3600")
