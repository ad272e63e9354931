"""Files in a local directory (the default: ``<data_dir>/files``).

A write that finds the disk full (``ENOSPC``, ``EDQUOT``) leaves nothing behind (no partial temporary
file) and raises :class:`~cogport.errors.InsufficientStorage` (507).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from cogport.errors import FileNotFound, InsufficientStorage
from cogport.storage.base import check_key


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"invalid storage key {key!r}")
        return path

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with _disk_full_is_507(tmp):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        path = self._path(key)
        tmp = path.with_name(path.name + ".tmp")
        size = 0
        with _disk_full_is_507(tmp):
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    handle.write(chunk)
            os.replace(tmp, path)
        return size

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise FileNotFound() from exc

    async def open_chunks(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFound()
        with path.open("rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            await asyncio.to_thread(shutil.rmtree, path, True)
        else:
            path.unlink(missing_ok=True)

    async def copy(self, source: str, key: str) -> None:
        source_path, target = self._path(source), self._path(key)
        if not source_path.is_file():
            raise FileNotFound()
        with _disk_full_is_507():
            await asyncio.to_thread(_link_or_copy, source_path, target)

    async def download_to(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise FileNotFound()
        with _disk_full_is_507():
            await asyncio.to_thread(_link_or_copy, source, path)

    async def presign(
        self, key: str, ttl: float, *, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        return None  # this server serves local files itself (signed internal URLs)

    async def close(self) -> None:
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` gets ``source``'s bytes: a hard link (stored files are never written in place, only
    replaced), else a copy; through a temporary name, so ``target`` is whole or absent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _disk_full_is_507(temporary: Path | None = None) -> Iterator[None]:
    """A full disk is :class:`InsufficientStorage`; ``temporary`` is removed on any failure."""
    try:
        yield
    except BaseException as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("The server's disk is full: the file could not be stored.") from exc
        raise
