"""In-process fan-out of prediction changes: sync waiters and stream subscribers.

The database is the source of truth; the hub only makes this process react at once. On PostgreSQL the
changes of other API processes are published here too (by lifecycle/notify.py, without data: the
subscriber reads the row); waiters and streams poll the database as well, in case a notification is lost.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

EventKind = Literal["start", "output", "logs", "completed"]


@dataclass(frozen=True)
class Change:
    prediction_id: str
    kind: EventKind
    data: Any = None


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Change]]] = defaultdict(set)
        self._done: dict[str, set[asyncio.Future[Any]]] = defaultdict(set)

    def publish(self, change: Change) -> None:
        for queue in self._subscribers.get(change.prediction_id, ()):
            queue.put_nowait(change)
        if change.kind == "completed":
            for future in self._done.pop(change.prediction_id, ()):
                if not future.done():
                    future.set_result(change.data)

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
