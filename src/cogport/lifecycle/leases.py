"""Claims, leases and deadlines: the queue's housekeeping, a round every third of a lease.

A run is claimed by one process (``claimed_by`` = its node id) with a lease that the process renews while
it holds the run (:meth:`~cogport.lifecycle.whereabouts.Whereabouts.held`). A claim whose lease ran out
belongs to a process that died: queued work is put back, work that had started is failed with a clear
error (or reported canceled when its cancel was asked). Cancels asked through another process (the row's
flag) and ``Cancel-After`` deadlines are acted on here too: a run this process holds is stopped wherever
it is (``stop``), any other ends in the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

from cogport.core.status import Status
from cogport.db.engine import Database
from cogport.db.tables import Prediction
from cogport.db.writer import GroupWriter
from cogport.lifecycle.status import Transitions
from cogport.lifecycle.whereabouts import Place, Whereabouts
from cogport.ops import predictions as prediction_ops

log = logging.getLogger(__name__)

RESTART_ERROR = "The prediction was interrupted because the server running it stopped; please run it again."

Stop = Callable[[str, Status], Awaitable[Place]]
"""Stops a run wherever it is in this process (``canceled``, or ``aborted`` by its deadline); returns where
it was (ELSEWHERE: not held here, nothing done)."""


class Leases:
    def __init__(
        self,
        database: Database,
        writer: GroupWriter,
        transitions: Transitions,
        whereabouts: Whereabouts,
        stop: Stop,
        *,
        node: str,
        lease: float,
    ) -> None:
        self.database = database
        self.writer = writer
        self.transitions = transitions
        self.whereabouts = whereabouts
        self.stop = stop
        self.node = node
        self.lease = lease
        self._database_out = False
        """The last housekeeping could not reach the database (nobody could renew a lease meanwhile)."""
        self._grace_until = 0.0
        """Until then (monotonic) other processes' lapsed claims are not taken for lost: after a database
        outage every process needs one round to renew the leases that ran out while none could."""

    async def housekeeping(self) -> bool:
        """Renew this process's leases, put back or end lost work, act on cancels and deadlines. True when
        work was put back (the queue is worth reading again)."""
        try:
            async with self.database.session() as session:
                candidates = await prediction_ops.expired_claims(session, self.node)
                overdue = await prediction_ops.past_deadline(session)
                cancels = await prediction_ops.cancel_requests(session, self.node)
            # Read after the rows: a claim committed before that read is held here by now.
            held = self.whereabouts.held()
            await self.writer.run(lambda tx: prediction_ops.renew_leases(tx, self.node, held, self.lease))
        except Exception:
            self._database_out = True
            raise
        if self._database_out:
            self._database_out = False
            self._grace_until = time.monotonic() + self.lease
        others_lost = time.monotonic() >= self._grace_until
        lost = [p for p in candidates if (others_lost if p.claimed_by != self.node else p.id not in held)]
        for prediction_id in cancels:
            await self.stop(prediction_id, Status.CANCELED)
        for prediction in lost:
            if prediction.status == Status.STARTING:
                await self.writer.run(
                    partial(prediction_ops.unclaim, prediction_id=prediction.id, claimed_by=prediction.claimed_by)
                )
                log.info("requeued %s: its runner is gone", prediction.id)
            elif prediction.cancel_requested:  # its cancel was asked: that is how it ended
                await self.finish(prediction, Status.CANCELED)
            else:
                await self.finish(prediction, Status.FAILED, RESTART_ERROR)
        for prediction in overdue:
            await self._deadline(prediction)
        return bool(lost)

    async def _deadline(self, prediction: Prediction) -> None:
        """``prediction``'s ``Cancel-After`` passed: stopped where it is when held here (it ends ``aborted``),
        else ended in the database when nobody runs it."""
        if (await self.stop(prediction.id, Status.ABORTED)).held:
            return
        if prediction.status == Status.STARTING and prediction.claimed_by in (None, self.node):
            await self.finish(prediction, Status.ABORTED)
        elif prediction.claimed_by is None:
            await self.finish(prediction, Status.CANCELED)

    async def finish(self, prediction: Prediction | str, to: Status, error: str | None = None) -> None:
        await self.writer.run(lambda tx: self.transitions.transition(tx, prediction, to, error=error))
