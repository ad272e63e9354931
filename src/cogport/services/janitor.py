"""Removes deleted versions in the background: predictions, output files, environments."""

from __future__ import annotations

import asyncio
import logging
import shutil

from cogport.db.engine import Database
from cogport.lifecycle import trainings
from cogport.ops import files as file_ops
from cogport.ops import versions
from cogport.services.base import Service
from cogport.storage.base import Storage

log = logging.getLogger(__name__)


class Janitor(Service):
    name = "janitor"
    interval = 10.0

    def __init__(self, database: Database, storage: Storage) -> None:
        super().__init__()
        self.database = database
        self.storage = storage

    async def run_once(self) -> bool:
        async with self.database.session() as session:
            pending = await versions.pending_deletions(session, limit=5)
            for version in pending:
                await file_ops.delete_prediction_files(
                    session, self.storage, await versions.prediction_ids(session, version)
                )
                source = version.source_path
                await versions.purge(session, version)
                await trainings.release_weights(session, self.storage, version)
                log.info("deleted version %s", version.id)
                if source and not await versions.source_in_use(session, source):
                    await asyncio.to_thread(shutil.rmtree, source, True)
        return len(pending) == 5
