"""Removes coglet's per-prediction directories, ``/tmp/coglet/predictions/<id>`` (in a sandbox, the
instance's own ``<tmpdir>/coglet/predictions/<id>``).

coglet creates ``{inputs,outputs}`` there for every prediction (the path is hard-coded: TMPDIR is
ignored) and never removes them (cog issue #3096): thousands of predictions leave thousands of
directories. Removing even an empty tree costs 0.3-7 ms on a busy disk, so ids are collected as
predictions end and removed in batches in a worker thread, off the event loop and the hot path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

PREDICTION_DIRS = Path("/tmp/coglet/predictions")


class PredictionDirSweeper:
    def __init__(self, root: Path = PREDICTION_DIRS) -> None:
        self.root = root
        self._pending: list[tuple[Path, str]] = []
        """(root, id) pairs: the paths are joined in the worker thread, not on the event loop (a ``Path``
        join per prediction costs more than the rest of the mark)."""

    def add(self, prediction_id: str, root: Path | None = None) -> None:
        """Mark ``prediction_id``'s directory under ``root`` (a sandboxed instance's own
        ``<tmpdir>/coglet/predictions``; default: the shared one) for removal (ids that could escape
        ``root`` are ignored)."""
        if prediction_id and "/" not in prediction_id and prediction_id not in (".", ".."):
            self._pending.append((root or self.root, prediction_id))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def sweep(self) -> None:
        """Remove every marked directory (in a worker thread)."""
        if self._pending:
            batch, self._pending = self._pending, []
            await asyncio.to_thread(self._remove, batch)

    def _remove(self, batch: list[tuple[Path, str]]) -> None:
        for root, prediction_id in batch:
            path = root / prediction_id
            try:  # what coglet leaves for most predictions: two empty folders (a fifth of rmtree's work)
                for empty in (path / "inputs", path / "outputs", path):
                    os.rmdir(empty)
            except OSError:
                shutil.rmtree(path, ignore_errors=True)
