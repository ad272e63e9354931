"""Streaming a stored file as a response body (downloads and output files share it)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from cogport.db.tables import StoredFile
from cogport.errors import FileNotFound
from cogport.files.media import content_disposition, media_type
from cogport.storage.base import Storage


async def file_response(request: Request, storage: Storage, row: StoredFile, *, cache: str) -> Response:
    """The bytes of ``row``: its content type, length, ``ETag`` (MD5), 304 on a matching ``If-None-Match``."""
    etag = f'"{row.md5}"'
    headers = {
        "ETag": etag,
        "Cache-Control": cache,
        "Content-Disposition": content_disposition(row.name),
        "X-Content-Type-Options": "nosniff",
        # User content on the API's origin: never let it run as a page of that origin.
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    if not await storage.exists(row.storage_key):
        raise FileNotFound()
    headers["Content-Length"] = str(row.size)
    if request.method == "HEAD":
        return Response(headers=headers, media_type=media_type(row.content_type))
    chunks = storage.open_chunks(row.storage_key)
    return StreamingResponse(chunks, headers=headers, media_type=media_type(row.content_type))
