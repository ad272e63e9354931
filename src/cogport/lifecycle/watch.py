"""One shared watch, per API process, over the runs its streams follow but another process holds.

A stream of a run this process records is fed by the hub alone (the recorder publishes each change with
its data): it costs no read while the run is quiet. Every other run a stream follows (queued, or held by
another API process) is read here, for all its streams at once:

* every ``POLL`` seconds, one query for all of them (their status and the length of their logs and output;
  whole rows only for those that changed), or at once when another process announces a change of one
  (a data-less change in the hub: PostgreSQL ``NOTIFY``, see lifecycle/notify.py);
* a changed row is published into the hub as a ``row`` change, or as ``completed`` with the final row
  (sync waiters take it too), which every stream of that run reads.

Reads go through the engine's pool one query at a time, never held between rounds: 5,000 streams cost one
read per ``POLL`` (or per announcement), not 5,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable

from sqlalchemy import Text, cast, func, select

from cogport.core.status import TERMINAL
from cogport.db.engine import Database
from cogport.db.tables import Prediction
from cogport.lifecycle.hub import Change, Hub

__all__ = ["BATCH", "POLL", "Watcher"]

log = logging.getLogger(__name__)

POLL = 0.5
"""Seconds between reads of the watched runs (announcements wake it sooner)."""
BATCH = 500
"""Ids per query (SQLite allows 32,766 parameters; a shorter statement plans faster)."""

Fingerprint = tuple[str, int, int]
"""``(status, length of logs, length of output as text)``: what a stream could see change."""


class Watcher:
    """See the module docstring. ``held``: the runs this process records (the hub carries their changes)."""

    def __init__(self, database: Database, hub: Hub, *, held: Callable[[], Collection[str]]) -> None:
        self.database = database
        self.hub = hub
        self.held = held
        self._watched: dict[str, int] = {}
        self._seen: dict[str, Fingerprint] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._complained = -60.0
        hub.on_unread = self.changed

    def watch(self, prediction_id: str) -> None:
        """A stream follows ``prediction_id`` (until :meth:`unwatch`)."""
        self._watched[prediction_id] = self._watched.get(prediction_id, 0) + 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cogport-watcher")

    def unwatch(self, prediction_id: str) -> None:
        count = self._watched.get(prediction_id, 0) - 1
        if count > 0:
            self._watched[prediction_id] = count
            return
        self._watched.pop(prediction_id, None)
        self._seen.pop(prediction_id, None)
        self._dirty.discard(prediction_id)

    def changed(self, prediction_id: str) -> None:
        """A change of ``prediction_id`` was announced without its data: read it now if it is watched."""
        if prediction_id in self._watched:
            self._dirty.add(prediction_id)
            self._wake.set()

    @property
    def watched(self) -> int:
        return len(self._watched)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        """Every ``POLL`` seconds all the watched runs; in between, those announced."""
        loop = asyncio.get_running_loop()
        due = loop.time() + POLL
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, due - loop.time()))
            self._wake.clear()
            if loop.time() >= due:
                due = loop.time() + POLL
                wanted: Iterable[str] = self._watched
            else:
                wanted = self._dirty
            self._dirty = set()
            held = self.held()
            ids = [prediction_id for prediction_id in wanted if prediction_id not in held]
            if not ids:
                continue
            try:
                await self.round(ids)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is out: streams keep their keep-alives meanwhile
                if loop.time() - self._complained >= 60:
                    self._complained = loop.time()
                    log.warning("reading the runs that streams watch failed (%s); trying again", exc)

    async def round(self, ids: list[str]) -> None:
        """Read ``ids`` (their fingerprints, then the rows that changed) and publish what changed."""
        changed: list[str] = []
        async with self.database.reader() as session:
            for batch in _batches(ids):
                query = select(
                    Prediction.id,
                    Prediction.status,
                    func.coalesce(func.length(Prediction.logs), 0),
                    func.coalesce(func.length(cast(Prediction.output, Text)), 0),
                ).where(Prediction.id.in_(batch))
                for prediction_id, status, logs_length, output_length in (await session.execute(query)).all():
                    fingerprint = (status, int(logs_length), int(output_length))
                    if self._seen.get(prediction_id) != fingerprint:
                        changed.append(prediction_id)
                        self._seen[prediction_id] = fingerprint
            rows: list[Prediction] = []
            for batch in _batches(changed):
                rows += (await session.execute(select(Prediction).where(Prediction.id.in_(batch)))).scalars().all()
        for row in rows:
            if row.id in self._watched:
                self.hub.publish(Change(row.id, "completed" if row.status in TERMINAL else "row", row))


def _batches(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]
