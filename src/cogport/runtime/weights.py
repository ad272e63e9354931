"""Trained weights as a local file for the runtime.

A trained version's weights are an object in storage (``weights_key``, ``weights/<content>/<name>``).
coglet gets them as a file path (``COG_WEIGHTS``, bound read-only into the sandbox), so before an
instance of such a version starts the dispatcher copies the object once to
``<data_dir>/cache/weights/<sha256 of the key>/<name>`` (a hard link when storage is the local
directory). The key is content addressed (a hash of the base version and the weights) and never rewritten,
so a file in the cache is always current; it is removed when the last version using the key is purged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shutil
from pathlib import Path

from cogport.errors import FileNotFound, SetupFailed
from cogport.storage.base import Storage


class WeightsCache:
    def __init__(self, storage: Storage, root: Path) -> None:
        self.storage = storage
        self.root = root
        """``<data_dir>/cache/weights``."""
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, key: str) -> Path:
        """Where the weights at ``key`` are (once :meth:`ensure` returned): the key's name kept, so a model
        that looks at the extension (``.tar``, ``.safetensors``) sees it."""
        folder = hashlib.sha256(key.encode()).hexdigest()
        return self.root / folder / (posixpath.basename(key) or "weights")

    async def ensure(self, key: str | None) -> None:
        """Copy the weights at ``key`` into the cache unless they are there. Raises :class:`SetupFailed`
        when storage has no such object (the run cannot start)."""
        if not key:
            return
        path = self.path_for(key)
        if path.is_file():
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if path.is_file():
                return
            try:
                await self.storage.download_to(key, path)
            except FileNotFound as exc:
                raise SetupFailed("The version's weights are missing from storage") from exc
            # Readable by the model's own uid (the sandbox binds this one file, read-only, and no other).
            await asyncio.to_thread(os.chmod, path, 0o644)
        self._locks.pop(key, None)

    async def forget(self, key: str) -> None:
        """Remove the cached copy of ``key`` (its last version is gone)."""
        await asyncio.to_thread(shutil.rmtree, self.path_for(key).parent, True)
