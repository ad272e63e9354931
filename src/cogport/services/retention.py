"""Data retention: old predictions lose their data, expired files go away.

* With ``data_retention_hours`` set (off by default), predictions and trainings that finished longer ago
  than that lose their input, output, logs and output files: ``data_removed`` becomes true and ``output``
  null (the key stays), as on Replicate.
* Always: uploads past their ``expires_at`` (``files_expiry_hours``) are deleted, and so are output files
  that were never linked to a prediction (:func:`cogport.ops.files.link_outputs`) within their grace time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.core.status import TERMINAL
from cogport.db.engine import Database
from cogport.db.tables import Prediction, utcnow
from cogport.ops import files as file_ops
from cogport.services.base import Service
from cogport.settings import Settings
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

BATCH = 100


class RetentionService(Service):
    name = "retention"
    interval = 60.0

    def __init__(self, database: Database, storage: Storage, settings: Settings) -> None:
        super().__init__()
        self.database = database
        self.storage = storage
        self.settings = settings

    async def run_once(self) -> bool:
        now = utcnow()
        removed = 0
        if self.settings.data_retention_hours:
            removed = await self.remove_old_data(now - timedelta(hours=self.settings.data_retention_hours))
        expired = await self.remove_expired_files(now)
        return removed == BATCH or expired == BATCH

    async def remove_old_data(self, cutoff: datetime) -> int:
        """Strip one batch of predictions that finished before ``cutoff``; return how many."""
        async with self.database.session() as session:
            ids = await _finished_before(session, cutoff)
            if ids:
                await file_ops.delete_prediction_files(session, self.storage, ids)
                await session.execute(
                    update(Prediction)
                    .where(Prediction.id.in_(ids))
                    .values(input={}, output=None, logs="", data_removed=True)
                )
        if ids:
            log.info("removed the data of %d predictions", len(ids))
        return len(ids)

    async def remove_expired_files(self, now: datetime) -> int:
        async with self.database.session() as session:
            rows = await file_ops.expired(session, now, BATCH)
            await file_ops.remove(session, self.storage, rows)
        if rows:
            log.info("removed %d expired files", len(rows))
        return len(rows)


async def _finished_before(session: AsyncSession, cutoff: datetime) -> list[str]:
    finished = func.coalesce(Prediction.completed_at, Prediction.created_at)
    result = await session.execute(
        select(Prediction.id)
        .where(
            Prediction.status.in_([str(status) for status in TERMINAL]),
            Prediction.data_removed.is_(False),
            finished < cutoff,
        )
        .limit(BATCH)
    )
    return list(result.scalars())
