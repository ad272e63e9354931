"""Group commit: the hot path's writes, from any number of concurrent callers, share transactions.

Usage (one per app, owned by the lifespan)::

    writer = GroupWriter(database)
    writer.start()
    row = await writer.run(lambda session: ops.insert(session, ...))   # returns once committed
    await writer.stop()

Each ``run`` queues an *operation* (an async function of a session) and returns its result once the
transaction that ran it has committed. One task takes every operation queued so far, runs them in
order in one transaction and commits once: while a commit is under way the next callers queue up, so
under load many creates and completions share one commit, and alone a write waits for nothing.

Operations run in the order they were queued. One that raises rolls back its whole batch; the batch is
then run again one operation per transaction, so that only the failing one fails (operations must
therefore change nothing outside the database before the commit: in-memory effects belong in
:func:`cogport.db.engine.on_commit` callbacks, which run after the commit that made them true).

On SQLite this also makes the hot path a single writer: concurrent transactions would otherwise wait
for the database lock in SQLite's busy handler (sleeps of 1 to 100 ms).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.engine import Database
from cogport.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[AsyncSession], Awaitable[T]]
MAX_BATCH = 500


@dataclass
class _Pending:
    operation: Operation[Any]
    future: asyncio.Future[Any]


class GroupWriter:
    def __init__(self, database: Database, *, max_batch: int = MAX_BATCH) -> None:
        self.database = database
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0
        """Transactions committed (for the benchmark's and the metrics' counters)."""
        self.operations = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="cogport-group-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._stopping = True
        if self._task is None:
            return
        await self._queue.put(_Pending(_stop, asyncio.get_running_loop().create_future()))
        await self._task
        self._task = None

    async def run(self, operation: Operation[T]) -> T:
        """Run ``operation`` in a shared transaction; its result once that transaction has committed."""
        if self._task is None:
            async with self.database.session() as session:  # not started (tests, tools): a plain transaction
                return await operation(session)
        # The caller may be canceled (a client hung up): the write still happens, as if it were sent.
        return await asyncio.shield(self.submit(operation))

    def submit(self, operation: Operation[T]) -> asyncio.Future[T]:
        """Queue ``operation`` now (operations run in the order they are queued); a future of its result."""
        if self._stopping or self._task is None:
            raise BackendUnavailable("The server is shutting down" if self._stopping else "The writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(operation, future))
        return future

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            stop = any(item.operation is _stop for item in batch)
            batch = [item for item in batch if item.operation is not _stop]
            if batch:
                await self._commit(batch)
            if stop:
                for item in _drain(self._queue):
                    item.future.set_exception(BackendUnavailable("The server is shutting down"))
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            for item in batch:  # isolate the failure: one transaction each
                try:
                    (result,) = await self._transaction([item])
                except Exception as exc:
                    if not item.future.done():
                        item.future.set_exception(exc)
                else:
                    if not item.future.done():
                        item.future.set_result(result)
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def _transaction(self, batch: list[_Pending]) -> list[Any]:
        results: list[Any] = []
        async with self.database.session() as session:
            for item in batch:
                results.append(await item.operation(session))
        self.batches += 1
        self.operations += len(batch)
        return results


def _drain(queue: asyncio.Queue[_Pending]) -> list[_Pending]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _stop(_session: AsyncSession) -> None:
    """The marker :meth:`GroupWriter.stop` queues (never run)."""
