"""Model output files: how they are kept, whether coglet uploads them or sends them inline.

coglet (0.23.1) started with ``--upload-url`` uploads each file output in a task of its own and adds
its URL to the output when that upload *completes*, so a model returning ``list[Path]`` or yielding
``Iterator[Path]`` gets its files back in upload-completion order (see docs/files.md). Without
``--upload-url`` it sends them inline, as ``data:`` URLs, in the model's order. The runtime therefore
starts versions whose output is a list of files without ``--upload-url`` and hands each inline file
to :class:`OutputFiles`, which keeps it exactly as the upload receiver keeps an uploaded one
(:func:`store_output`): an unlinked output file that ``link_outputs`` gives to its prediction when
that finishes, with the same URL shape, access rule and retention.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from urllib.parse import unquote_to_bytes

from cogport.db.engine import Database
from cogport.db.tables import utcnow
from cogport.files import media
from cogport.files.streams import Digest, digested
from cogport.files.urls import output_url, public_base_url
from cogport.identifiers import new_object_id
from cogport.ops import files as ops
from cogport.settings import Settings
from cogport.storage.base import Storage

DECODE_CHARS = 4 * 65536
"""Base64 characters decoded (and written) at a time: 192 KiB of file per step, a multiple of 4."""


async def store_output(
    database: Database,
    storage: Storage,
    settings: Settings,
    *,
    name: str,
    content_type: str,
    chunks: AsyncIterator[bytes],
) -> str:
    """Keep one model output file (unlinked until its prediction finishes) and return its public URL,
    ``{public}/v1/files/outputs/{id}/{access token}/{name}``. ``chunks`` are streamed to storage."""
    file_id = new_object_id()
    key = ops.storage_key(ops.OUTPUT, file_id, name)
    digest = Digest()
    try:
        await storage.put_stream(key, digested(chunks, digest))
        async with database.session() as session:
            row = await ops.add(
                session,
                file_id=file_id,
                kind=ops.OUTPUT,
                account_id=await ops.orphan_owner(session),
                name=name,
                content_type=content_type,
                digest=digest,
                storage_key=key,
                expires_at=utcnow() + ops.ORPHAN_GRACE,
            )
    except BaseException:
        await ops.remove_bytes(storage, file_id, key)
        raise
    return output_url(public_base_url(settings), row.id, row.access_token, name)


class OutputFiles:
    """Keeps the file outputs coglet sends inline (``OutputFileSink`` of :mod:`cogport.backends.base`)."""

    def __init__(self, database: Database, storage: Storage, settings: Settings) -> None:
        self.database = database
        self.storage = storage
        self.settings = settings

    async def keep(self, data_url: str, index: int) -> str:
        """Store ``data_url``, the ``index``-th item of an output, as ``output-<index><ext>``; its URL.
        (A ``data:`` URL carries the file's type but not its name.) ``ValueError`` if it is not one."""
        content_type, chunks = decode_data_url(data_url)
        name = f"output-{index}{media.extension(content_type)}"
        return await store_output(
            self.database, self.storage, self.settings, name=name, content_type=content_type, chunks=chunks
        )


def decode_data_url(url: str) -> tuple[str, AsyncIterator[bytes]]:
    """A ``data:`` URL's media type and its bytes, decoded a slice at a time as they are written (no second
    whole copy). ``ValueError`` if it is not one; bad base64 raises ``ValueError`` from the iterator."""
    comma = url.find(",")
    if not url.startswith("data:") or comma < 0:
        raise ValueError("not a data: URL")
    params = url[len("data:") : comma].split(";")
    content_type = params[0].strip() or "text/plain"
    if "base64" not in (p.strip().lower() for p in params[1:]):
        return content_type, _once(unquote_to_bytes(url[comma + 1 :]))
    return content_type, _base64_slices(url, comma + 1)


async def _base64_slices(url: str, start: int) -> AsyncIterator[bytes]:
    for at in range(start, len(url), DECODE_CHARS):
        try:
            yield base64.b64decode(url[at : at + DECODE_CHARS], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"a data: URL with bad base64: {exc}") from None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
