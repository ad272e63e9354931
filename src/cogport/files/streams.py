"""Upload bodies streamed to storage: size limit, checksums, and ``multipart/form-data`` parsing.

Nothing here holds a whole upload in memory: chunks are hashed and counted as they pass on to
:meth:`cogport.storage.base.Storage.put_stream`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from cogport.errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELDS_MAX_BYTES = 1024 * 1024
"""All parts other than ``content`` together (``filename``, ``type``, ``metadata``)."""


def too_large(limit: int) -> PayloadTooLarge:
    mib = 1024 * 1024
    size = f"{limit // mib}MB" if limit % mib == 0 else f"{limit} bytes"
    return PayloadTooLarge(f"Files must be less than {size} in size")


class Digest:
    """Size, SHA-256 and MD5 of the bytes seen so far."""

    def __init__(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        self._md5.update(chunk)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()


async def digested(chunks: AsyncIterator[bytes], digest: Digest, limit: int | None = None) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, feeding ``digest``; raise 413 once more than ``limit`` bytes went by."""
    async for chunk in chunks:
        if not chunk:
            continue
        digest.update(chunk)
        if limit is not None and digest.size > limit:
            raise too_large(limit)
        yield chunk


async def prepended(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``head``'s chunks (already read from a stream), then the rest of it."""
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class UploadForm:
    """A ``POST /v1/files`` body: the ``content`` part streams out of :meth:`content`, the others are kept.

    Small parts are kept whether they are plain fields or file parts: the JS client sends ``metadata``
    as a Blob (a file part named ``blob`` of type ``application/json``), the Python client as a field.
    """

    def __init__(self, content_type_header: str | None) -> None:
        kind, params = parse_options_header((content_type_header or "").encode("latin-1", "replace"))
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise BadRequest("The request body must be multipart/form-data with a 'content' part")
        self._boundary = boundary
        self.fields: dict[str, bytes] = {}
        self.content_seen = False
        self.content_filename: str | None = None
        self.content_type: str | None = None
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._pending: list[bytes] = []
        self._fields_size = 0

    async def content(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The bytes of the ``content`` part, read from ``body`` (the whole body is consumed)."""
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        }
        parser = MultipartParser(self._boundary, callbacks)
        try:
            async for chunk in body:
                parser.write(chunk)
                if self._pending:
                    data = b"".join(self._pending)
                    self._pending.clear()
                    yield data
            parser.finalize()
        except FormParserError as exc:
            raise BadRequest("The multipart body is not valid") from exc
        if self._pending:
            yield b"".join(self._pending)
            self._pending.clear()

    def text(self, name: str) -> str | None:
        raw = self.fields.get(name)
        return None if raw is None else _decode(raw)

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers.append((self._header_name.lower(), self._header_value))
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        headers = dict(self._part.headers)
        _, options = parse_options_header(headers.get(b"content-disposition"))
        if b"name" not in options:
            raise BadRequest('Every multipart part needs a Content-Disposition "name"')
        self._part.name = _decode(options[b"name"])
        if b"filename" in options:
            self._part.filename = _decode(options[b"filename"])
        if b"content-type" in headers:
            self._part.content_type = _decode(headers[b"content-type"]).strip() or None
        if self._part.name == "content":
            if self.content_seen:
                raise BadRequest("Send one 'content' part")
            self.content_seen = True
            self.content_filename = self._part.filename
            self.content_type = self._part.content_type
        else:
            self.fields[self._part.name] = b""  # a repeated field: the last one wins

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part.name == "content":
            self._pending.append(chunk)
            return
        self._fields_size += len(chunk)
        if self._fields_size > FIELDS_MAX_BYTES:
            raise BadRequest(f"The parts other than 'content' must total at most {FIELDS_MAX_BYTES} bytes")
        self.fields[self._part.name] += chunk
