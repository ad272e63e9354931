"""Where files live: behind :class:`cogport.storage.base.Storage` (a local directory, or an S3 bucket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol


def check_key(key: str) -> str:
    """``key`` when it is a well-formed storage key (``/``-separated, no empty, ``.`` or ``..`` segment)."""
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    """Blob storage keyed by opaque strings such as ``outputs/<file id>/<name>``.

    A missing key is :class:`cogport.errors.FileNotFound` (``get``, ``open_chunks`` once iterated,
    ``download_to``); ``delete`` and ``delete_prefix`` of what is not there do nothing. A key with an empty,
    ``.`` or ``..`` segment is a ``ValueError``.
    """

    async def put(self, key: str, data: bytes) -> None: ...

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store what ``chunks`` yields (never all held in memory); the number of bytes."""
        ...

    async def get(self, key: str) -> bytes: ...

    def open_chunks(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> None:
        """Delete ``prefix`` and everything under ``prefix/`` (a file's folder)."""
        ...

    async def copy(self, source: str, key: str) -> None:
        """Put the bytes at ``source`` also at ``key`` (a hard link or a server-side copy where possible)."""
        ...

    async def download_to(self, key: str, path: Path) -> None:
        """Copy the object at ``key`` to the local file ``path``, atomically (a temporary file renamed)."""
        ...

    async def presign(
        self, key: str, ttl: float, *, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        """A URL that fetches ``key`` straight from the storage for ``ttl`` seconds, answering with
        ``filename`` (``Content-Disposition``) and ``content_type``; ``None`` when the storage has no such
        URLs (the local directory): then this server serves the bytes itself."""
        ...

    async def close(self) -> None:
        """Release connections (the app's lifespan calls it last)."""
        ...
