"""Removes deleted versions in the background: predictions, output files, bundles, environments.

A version's unfinished predictions end first, through the normal path, so their terminal webhooks are
sent: the ones this process runs are canceled in the backend (they end ``canceled`` once the model has
stopped), the rest (queued, or running on another process, whose late end is then ignored) end ``failed``
through :class:`~cogport.lifecycle.status.Transitions`. The version is purged on a later round, once
none of its predictions is unfinished.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from cogport.backends.base import Backend
from cogport.build import bundles
from cogport.core.status import Status
from cogport.db.engine import Database
from cogport.db.writer import GroupWriter
from cogport.lifecycle import trainings
from cogport.lifecycle.status import Transitions
from cogport.ops import files as file_ops
from cogport.ops import versions
from cogport.ops.trainings import weights_in_use
from cogport.runtime.weights import WeightsCache
from cogport.services.base import Service
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

VERSION_DELETED = "The version of this prediction was deleted"


class Janitor(Service):
    name = "janitor"
    interval = 10.0

    def __init__(
        self,
        database: Database,
        storage: Storage,
        writer: GroupWriter,
        transitions: Transitions,
        backend: Backend,
        weights: WeightsCache | None = None,
    ) -> None:
        super().__init__()
        self.weights = weights
        """The local copies of trained weights, removed with the last version using them."""
        self.database = database
        self.storage = storage
        self.writer = writer
        self.transitions = transitions
        self.backend = backend

    async def run_once(self) -> bool:
        await self._end_unfinished()
        purged = 0
        async with self.database.session() as session:
            pending = await versions.pending_deletions(session, limit=5)
            for version in pending:
                if await versions.has_unfinished(session, version):
                    continue  # ending (a canceled model stops a moment later): purged on a later round
                await file_ops.delete_prediction_files(
                    session, self.storage, await versions.prediction_ids(session, version)
                )
                source = version.source_path
                await versions.purge(session, version)
                await trainings.release_weights(session, self.storage, version)
                await self.storage.delete_prefix(bundles.prefix(version.id))
                key = version.weights_key
                if self.weights is not None and key and not await weights_in_use(session, key):
                    await self.weights.forget(key)
                log.info("deleted version %s", version.id)
                purged += 1
                if source and not await versions.source_in_use(session, source):
                    await asyncio.to_thread(shutil.rmtree, source, True)
        return purged == 5

    async def _end_unfinished(self) -> None:
        async with self.database.session() as session:
            unfinished = await versions.unfinished_of_deleted(session)
        running = self.backend.running()
        for prediction_id in unfinished:
            if prediction_id in running:
                await self.backend.cancel(prediction_id)
            else:
                await self._fail(prediction_id)

    async def _fail(self, prediction_id: str) -> None:
        await self.writer.run(
            lambda tx: self.transitions.transition(tx, prediction_id, Status.FAILED, error=VERSION_DELETED)
        )
