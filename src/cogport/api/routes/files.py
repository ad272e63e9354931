"""The Files API: ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}`` and signed downloads.

Uploads stream to storage while they are parsed (nothing holds a whole file in memory), and no database
transaction stays open while the bytes arrive.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from cogport import storable
from cogport.api import pagination
from cogport.api.deps import BaseUrl, CallDep, CurrentPrincipal, ResourcesDep, SessionDep, get_principal
from cogport.api.file_bodies import file_response
from cogport.api.presenters import timestamp
from cogport.db.tables import StoredFile, utcnow
from cogport.errors import FileNotFound, Forbidden, ValidationFailed
from cogport.files.media import safe_name
from cogport.files.signing import check_download, signing_key
from cogport.files.streams import FIELDS_MAX_BYTES, Digest, UploadForm, digested, prepended, too_large
from cogport.files.urls import file_url
from cogport.identifiers import new_object_id
from cogport.ops import files as ops
from cogport.schemas.files import File
from cogport.schemas.responses import Page

router = APIRouter(tags=["files"])

MULTIPART_SLACK = 64 * 1024
NAME_MAX_BYTES = 255


def present(row: StoredFile, base_url: str) -> File:
    created = timestamp(row.created_at) or ""
    return File(
        id=row.id,
        name=row.name,
        content_type=row.content_type,
        size=row.size,
        etag=row.md5,
        checksums={"sha256": row.sha256, "md5": row.md5},
        metadata=row.metadata_ or {},
        created_at=created,
        expires_at=timestamp(row.expires_at) or created,
        urls={"get": file_url(base_url, row.id)},
    )


def _check_length(request: Request, limit: int) -> None:
    """Refuse at once a body that announces more bytes than any acceptable upload can take."""
    try:
        length = int(request.headers.get("content-length", "0"))
    except ValueError:
        return
    if length > limit + FIELDS_MAX_BYTES + MULTIPART_SLACK:
        raise too_large(limit)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _details(form: UploadForm) -> tuple[str, str, dict[str, Any]]:
    """``(name, content_type, metadata)`` from the parsed form; 422 when they are not acceptable."""
    problems: list[tuple[str, str, str]] = []
    if not form.content_seen:
        problems.append(("required", "content", "content is required"))
    # Control characters (CR/LF above all) would break the Content-Disposition of every later download.
    name = _CONTROL.sub("_", form.text("filename") or form.content_filename or "file")
    if storable.problem(name) is not None:
        problems.append(("format", "filename", f"filename {storable.problem(name)}"))
    elif len(name.encode()) > NAME_MAX_BYTES:
        problems.append(("string_lte", "filename", f"filename must be at most {NAME_MAX_BYTES} bytes of UTF-8"))
    content_type = (form.text("type") or form.content_type or "application/octet-stream").strip()
    if "/" not in content_type or len(content_type) > 255 or _CONTROL.search(content_type):
        problems.append(("format", "type", f"type must be a MIME type, not {content_type[:60]!r}"))
    metadata: Any = {}
    raw = form.text("metadata")
    if raw is not None and raw.strip():
        try:
            metadata = json.loads(raw)
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            problems.append(("type", "metadata", "metadata must be a JSON object"))
        else:
            problems.extend(("format", where, reason) for where, reason in storable.problems(metadata, "metadata"))
    if problems:
        raise ValidationFailed(problems)
    return name, content_type, metadata


@router.post("/v1/files", status_code=201)
async def create_file(request: Request, resources: ResourcesDep, base_url: BaseUrl) -> File:
    principal = await get_principal(request)  # its own short transaction: an upload may take minutes
    database, settings, storage = resources.database, resources.settings, resources.storage
    _check_length(request, settings.files_max_bytes)
    form = UploadForm(request.headers.get("content-type"))
    file_id = new_object_id()
    key = ops.storage_key(ops.UPLOAD, file_id)
    digest = Digest()
    try:
        chunks = digested(form.content(request.stream()), digest, settings.files_max_bytes)
        first = await anext(chunks, None)  # the content part's headers are read by now: name the key after it
        key = ops.storage_key(
            ops.UPLOAD, file_id, safe_name(form.text("filename") or form.content_filename or "content")
        )
        await storage.put_stream(key, prepended([first] if first is not None else [], chunks))
        name, content_type, metadata = _details(form)
        async with database.session() as session:
            row = await ops.add(
                session,
                file_id=file_id,
                kind=ops.UPLOAD,
                account_id=principal.id,
                name=name,
                content_type=content_type,
                digest=digest,
                storage_key=key,
                metadata=metadata,
                expires_at=utcnow() + timedelta(hours=settings.files_expiry_hours),
            )
    except BaseException:
        await ops.remove_bytes(storage, file_id, key)
        raise
    return present(row, base_url)


@router.get("/v1/files")
async def list_files(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    base_url: BaseUrl,
    cursor: str | None = Query(None),
) -> Page[File]:
    page = await ops.list_uploads(session, principal, cursor=pagination.decode(cursor))
    next_url, previous_url = pagination.links(request, base_url, page)
    return Page(next=next_url, previous=previous_url, results=[present(row, base_url) for row in page.rows])


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, session: SessionDep, principal: CurrentPrincipal, base_url: BaseUrl) -> File:
    return present(await ops.get_upload(session, principal, file_id), base_url)


@router.delete("/v1/files/{file_id}", status_code=204)
async def delete_file(file_id: str, session: SessionDep, call: CallDep) -> Response:
    await ops.delete_upload(session, call.resources.storage, call.principal, file_id)
    return Response(status_code=204)


@router.api_route("/v1/files/{file_id}/download", methods=["GET", "HEAD"])
@router.api_route("/v1/files/{file_id}/download/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def download_file(
    file_id: str,
    request: Request,
    session: SessionDep,
    resources: ResourcesDep,
    owner: str | None = Query(None),
    expiry: str | None = Query(None),
    signature: str | None = Query(None),
) -> Response:
    """The bytes of an upload, for a signed URL (no token). The ``/{name}`` form ends in the file's name,
    so a model fetching it sees the extension; the signature is the same."""
    if not owner or not expiry or not signature:
        raise Forbidden("A download URL needs owner, expiry and signature")
    try:
        expires = int(expiry)
    except ValueError as exc:
        raise Forbidden("The download URL's expiry is not a unix timestamp") from exc
    if not check_download(signing_key(resources.settings), owner, file_id, expires, signature):
        raise Forbidden("The download URL's signature is not valid")
    if expires < time.time():
        raise Forbidden("The download URL has expired")
    found = await ops.upload_with_owner(session, file_id)
    if found is None or found[1].username != owner:
        raise FileNotFound()
    return await file_response(request, resources.storage, found[0], cache="private, max-age=3600")
