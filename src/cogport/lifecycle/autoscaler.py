"""The autoscaler: holds every deployment's instances between its ``min_instances`` and ``max_instances``.

A reconciler in the manner of Ray Serve's deployment state: each round it reads the deployments (the target
state, in the database) and hands the backend one ``ensure(spec, min, max)`` per deployment, where the spec
is the deployment's current version on its hardware, in a pool of its own. The backend does the rest with
the pure policy of :mod:`cogport.runtime.scaling`: the minimum started at once (on create and update) and
replaced when it crashes, more as queued plus running work needs them, those above the minimum stopped once
idle for ``COGPORT_RUNTIME__IDLE_TIMEOUT``, never more than the maximum. A release that changes the version
or the hardware leaves the old spec's instances to finish their work and idle out (``ensure(old, 0, max)``);
so does a deleted deployment.
"""

from __future__ import annotations

import logging

from cogport.backends.base import Backend
from cogport.background import Service
from cogport.core.jobs import VersionSpec
from cogport.db.engine import Database
from cogport.db.tables import Version
from cogport.lifecycle.dispatcher import Dispatcher
from cogport.ops import deployments as deployment_ops

log = logging.getLogger(__name__)


class Autoscaler(Service):
    name = "autoscaler"
    interval = 1.0

    def __init__(self, database: Database, backend: Backend, dispatcher: Dispatcher) -> None:
        super().__init__()
        self.database = database
        self.backend = backend
        self.dispatcher = dispatcher
        self._held: dict[int, tuple[VersionSpec, int]] = {}
        """Deployment id → the spec it was last held at, and its maximum."""

    async def run_once(self) -> bool:
        async with self.database.reader() as session:
            rows = await deployment_ops.active(session)
            refs = await deployment_ops.refs(session, rows)
            versions = {row.version_pk: await session.get(Version, row.version_pk) for row in rows}
        seen: set[int] = set()
        for row in rows:
            version = versions.get(row.version_pk)
            if version is None:
                continue
            seen.add(row.id)
            spec = self.dispatcher.spec_for(version, "predict", row.hardware, refs[row.id])
            previous = self._held.get(row.id)
            if previous is not None and previous[0].key != spec.key:
                self._release(*previous)
            try:
                await self.dispatcher.weights.ensure(spec.weights_key)
                self.backend.ensure(spec, row.min_instances, row.max_instances)
            except Exception:
                log.exception(
                    "holding deployment %s at %d-%d failed", refs[row.id], row.min_instances, row.max_instances
                )
                continue
            self._held[row.id] = (spec, row.max_instances)
        for gone in set(self._held) - seen:
            self._release(*self._held.pop(gone))
        return False

    def _release(self, spec: VersionSpec, maximum: int) -> None:
        self.backend.ensure(spec, 0, max(1, maximum))
