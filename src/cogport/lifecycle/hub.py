"""In-process fan-out of prediction changes: sync waiters and stream subscribers.

The database is the source of truth; the hub only makes this process react at once. What the recorder of
this process publishes carries its data (the logs and output so far, the final row), published before it is
written; the hub keeps the latest logs and output of each run until it ends (:meth:`Hub.latest`), so a
stream opened between a publish and its write misses nothing. Changes announced without data (another API
process's, heard through lifecycle/notify.py) go to ``on_unread`` too: the watcher (lifecycle/watch.py)
reads the row once for every stream and publishes it as a ``row`` change.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

EventKind = Literal["start", "output", "logs", "completed"]
ChangeKind = Literal["start", "output", "logs", "completed", "row"]
"""``row``: the row as stored, read by the watcher for a run this process does not hold."""

MAX_LATEST = 10_000
"""Runs whose latest logs and output are kept (the oldest go first: a run whose end was never published)."""


@dataclass(frozen=True)
class Change:
    prediction_id: str
    kind: ChangeKind
    data: Any = None


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Change]]] = defaultdict(set)
        self._done: dict[str, set[asyncio.Future[Any]]] = defaultdict(set)
        self._latest: dict[str, dict[str, Any]] = {}
        self.on_unread: Callable[[str], None] | None = None
        """Called with the id of each change published without data (see the module docstring)."""

    def publish(self, change: Change) -> None:
        if change.kind in ("output", "logs") and change.data is not None:
            latest = self._latest.get(change.prediction_id)
            if latest is None:
                if len(self._latest) >= MAX_LATEST:
                    del self._latest[next(iter(self._latest))]
                latest = self._latest[change.prediction_id] = {}
            latest[change.kind] = change.data
        elif change.kind == "completed":
            self._latest.pop(change.prediction_id, None)
        for queue in self._subscribers.get(change.prediction_id, ()):
            queue.put_nowait(change)
        if change.kind == "completed":
            for future in self._done.pop(change.prediction_id, ()):
                if not future.done():
                    future.set_result(change.data)
        if change.data is None and self.on_unread is not None:
            self.on_unread(change.prediction_id)

    def latest(self, prediction_id: str) -> tuple[Any, str | None]:
        """``(output, logs)`` last published for a run of this process that has not ended (None: none)."""
        latest = self._latest.get(prediction_id) or {}
        logs = latest.get("logs")
        return latest.get("output"), None if logs is None else str(logs)

    def subscribe(self, prediction_id: str) -> asyncio.Queue[Change]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._subscribers[prediction_id].add(queue)
        return queue

    def unsubscribe(self, prediction_id: str, queue: asyncio.Queue[Change]) -> None:
        queues = self._subscribers.get(prediction_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[prediction_id]

    def completion(self, prediction_id: str) -> asyncio.Future[Any]:
        """A future set to the ``completed`` change's data (the final row) when the prediction ends here."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._done[prediction_id].add(future)
        return future

    def forget(self, prediction_id: str, future: asyncio.Future[Any]) -> None:
        futures = self._done.get(prediction_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._done[prediction_id]
