"""The dispatcher: hands queued predictions to the backend, in order, fairly across versions.

The queue is the ``predictions`` table. A prediction is *claimed* by this process (``claimed_by`` =
its node id, with a lease that it renews while the job runs) before it is submitted, so several
API processes can share one database without running anything twice. Claims are taken in batches
(one statement, through the group writer): as many as the backend can start at once plus
``PREFETCH`` rounds of each version's slots, so that a slot that frees up takes the next job at once
instead of waiting for the dispatcher.

The dispatcher is the queue and the hand-over; its other pieces sit around the one owner of where each
run is (:mod:`cogport.lifecycle.whereabouts`), which each of them moves and asks:

* :mod:`~cogport.lifecycle.leases`: leases renewed, lost claims put back or ended, cancels asked through
  other processes, ``Cancel-After`` deadlines;
* :mod:`~cogport.lifecycle.fetching`: the input as the model gets it, and input URLs fetched in a task per run;
* :mod:`~cogport.lifecycle.placement`: the spec a run gets (hardware, pool, weights) and its queue's SKU.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from cogport.backends.base import Backend
from cogport.background import Service
from cogport.core.jobs import Job, VersionSpec
from cogport.core.kinds import Mode, RunKind
from cogport.core.status import Status
from cogport.db.engine import Database
from cogport.db.tables import Prediction, Version
from cogport.db.writer import GroupWriter
from cogport.lifecycle.fetching import InputFetching
from cogport.lifecycle.files_in import InputFetcher
from cogport.lifecycle.in_hand import InHand
from cogport.lifecycle.leases import RESTART_ERROR, Leases
from cogport.lifecycle.placement import DeploymentHardware, Placement
from cogport.lifecycle.recorder import Recorder
from cogport.lifecycle.status import Transitions
from cogport.lifecycle.whereabouts import Place
from cogport.ops import predictions as prediction_ops
from cogport.runtime.weights import WeightsCache
from cogport.settings import Settings
from cogport.storage.base import Storage

__all__ = ["BATCH", "PREFETCH", "RESTART_ERROR", "Dispatcher", "QueueKey"]

QueueKey = tuple[int, str, str]
"""``(version_pk, kind, deployment)``: the runs that share a spec (``deployment`` is ``""`` for none)."""


def _queue_key(prediction: Prediction) -> QueueKey:
    return prediction.version_pk, prediction.kind, prediction.deployment or ""


def _mode(kind: str) -> Mode:
    return RunKind(kind).mode


BATCH = 64
PREFETCH = 2
"""Rounds of a version's slots claimed ahead of its free slots (they wait in the backend)."""


class Dispatcher(Service):
    name = "dispatcher"
    interval = 1.0

    def __init__(
        self,
        database: Database,
        writer: GroupWriter,
        transitions: Transitions,
        backend: Backend,
        recorder: Recorder,
        storage: Storage,
        settings: Settings,
        *,
        node: str,
        lease: float,
        fetcher: InputFetcher | None = None,
    ) -> None:
        super().__init__()
        self.database = database
        self.writer = writer
        self.transitions = transitions
        self.backend = backend
        self.recorder = recorder
        self.storage = storage
        self.settings = settings
        self.node = node
        self.lease = lease
        self.whereabouts = recorder.whereabouts
        """Where each run this process holds is (the one owner; see :mod:`cogport.lifecycle.whereabouts`)."""
        self.placement = Placement(storage, settings)
        self.fetching = InputFetching(
            database, storage, settings, self.whereabouts, recorder, self.placement.weights, fetcher
        )
        self.leases = Leases(database, writer, transitions, self.whereabouts, self.stop_run, node=node, lease=lease)
        self._hardware: dict[QueueKey, str] = {}
        """The SKU each queue's runs run on."""
        self._versions: dict[int, Version] = {}
        self._next_housekeeping = 0.0
        self._backlog = False
        self._fresh = True
        self._waiting: dict[QueueKey, InHand] = {}

    @property
    def weights(self) -> WeightsCache:
        """Trained weights copied out of storage for the runtime (see :mod:`cogport.runtime.weights`)."""
        return self.placement.weights

    @property
    def deployment_hardware(self) -> DeploymentHardware | None:
        """How a deployment's SKU is found (set by the app once deployments exist)."""
        return self.placement.deployment_hardware

    @deployment_hardware.setter
    def deployment_hardware(self, find: DeploymentHardware | None) -> None:
        self.placement.deployment_hardware = find

    @property
    def fetcher(self) -> InputFetcher | None:
        """Fetches input URLs before a run starts (see :mod:`cogport.lifecycle.fetching`)."""
        return self.fetching.fetcher

    async def run_once(self) -> bool:
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + max(self.lease / 3, 0.2)
            await self.housekeeping()
            self._fresh = True  # also picks up work queued by other processes
        return await self.dispatch()

    async def stop(self) -> None:
        await super().stop()
        await self.fetching.stop_all()

    # --- dispatching ---------------------------------------------------------------------------

    def capacity_changed(self) -> None:
        """A slot may have freed up: worth a look only if work was left waiting last time."""
        if self._backlog:
            self.wake()

    def new_work(
        self, prediction: Prediction | None = None, version: Version | None = None, hardware: str | None = None
    ) -> None:
        """A run was queued: by this process (``prediction``, written already, its ``version`` and the
        ``hardware`` it runs on: it joins the runs in hand without a read of the queue), or elsewhere (look
        at the queue again)."""
        if prediction is None or version is None:
            self._fresh = True
        else:
            self._versions.setdefault(version.pk, version)
            key = _queue_key(prediction)
            if hardware is not None:
                self._hardware[key] = hardware
            self._waiting.setdefault(key, InHand()).add(prediction)
        self.wake()

    async def dispatch(self) -> bool:
        """Start what can start. The queue is read again after housekeeping (work of other processes, lost
        claims) or when the runs in hand have all started; in between, freed slots are filled from the runs
        in hand (read last time, or queued by this process since): no scan per run."""
        submitted = 0
        refresh = self._fresh or not any(runs.due for runs in self._waiting.values())
        if refresh:
            self._fresh = False
            async with self.database.session() as session:
                heads = await prediction_ops.queued_heads(session)
            keys = [_queue_key(head) for head in heads]
            self._waiting = {key: self._waiting.get(key) or InHand() for key in keys}
        else:
            keys = [key for key, runs in self._waiting.items() if runs.due]
        self._backlog = False
        for key in keys:
            submitted += await self._dispatch_version(key, refresh=refresh)
        return submitted > 0

    def can_start_now(self, version: Version, kind: str, hardware: str = "cpu", deployment: str = "") -> bool:
        """Whether a new run of ``version`` on ``hardware`` would get a slot at once (the sync fast path)."""
        return self.backend.has_capacity(self.placement.spec(version, _mode(kind), hardware, deployment))

    async def start_claimed(
        self,
        prediction: Prediction,
        version: Version,
        model_input: dict[str, Any],
        *,
        hardware: str = "cpu",
        written: bool = True,
    ) -> None:
        """Start a run created already claimed by this node (``can_start_now`` said yes), with the input
        resolved at create time; ``written=False``: its row is not written yet (the recorder writes it)."""
        spec = self.placement.spec(version, _mode(prediction.kind), hardware, prediction.deployment or "")
        await self._submit(prediction, spec, model_input, written=written)

    def forget_claimed(self, prediction_id: str) -> None:
        """A run created claimed whose row could not be written after all: stop it."""
        self.recorder.release(prediction_id)

    async def _dispatch_version(self, key: QueueKey, *, refresh: bool) -> int:
        version_pk, kind, deployment = key
        waiting = self._waiting.setdefault(key, InHand())
        if refresh or not waiting or key not in self._hardware:
            async with self.database.session() as session:
                if refresh or not waiting:
                    waiting.begin_read()
                    try:
                        rows = await prediction_ops.queued_for(session, version_pk, kind, BATCH, deployment)
                    except BaseException:
                        waiting.abandon_read()
                        raise
                    waiting.end_read(rows, BATCH)
                version = self._versions.get(version_pk) if waiting else None
                if waiting and version is None:
                    version = await session.get(Version, version_pk)
                if version is not None and waiting:
                    self._hardware[key] = await self.placement.hardware_of(session, version, deployment)
            if version is None:
                waiting.clear()
                return 0
            self._versions[version_pk] = version  # versions are immutable: keep them
        version = self._versions[version_pk]
        spec = self.placement.spec(version, _mode(kind), self._hardware.get(key, "cpu"), deployment)
        capacity = self.backend.capacity(spec)
        if capacity.refused is not None:
            waiting.clear()
            await self._fail_queued(key, capacity.refused)
            return 0
        free = capacity.free
        ahead = max(0, PREFETCH * max(1, spec.concurrency) - self.backend.waiting(spec))
        room = free + ahead
        if room <= 0 or not waiting:
            self._backlog = self._backlog or bool(waiting)
            return 0
        # A run this process holds already (read before another process put it back) is not claimed again.
        batch = [p for p in waiting.take(room) if self.whereabouts.where(p.id) is Place.ELSEWHERE]
        if waiting:
            self._backlog = True
        ids = [p.id for p in batch]
        self.whereabouts.claiming(ids)  # held from before the claim commits: no housekeeping takes it for lost
        claimed: set[str] = set()
        try:
            claimed = set(await self.writer.run(lambda tx: prediction_ops.claim_many(tx, ids, self.node, self.lease)))
        finally:
            # A run read earlier may have been canceled or taken by another process since: the claim says.
            for run_id in ids:
                if run_id not in claimed:
                    self.whereabouts.move(run_id, Place.ELSEWHERE)
        submitted = 0
        for prediction in batch:
            if prediction.id in claimed:
                set_committed_value(prediction, "claimed_by", self.node)
                await self._submit(prediction, spec)
                submitted += 1
        return submitted

    async def _submit(
        self,
        prediction: Prediction,
        spec: VersionSpec,
        model_input: dict[str, Any] | None = None,
        *,
        written: bool = True,
    ) -> None:
        self.recorder.hold(prediction, written=written)  # HANDING_OVER
        async with self.recorder.ending_on_failure(prediction):
            if model_input is None:
                version = self._versions.get(prediction.version_pk)
                resolved = await self.fetching.model_input(prediction, version)
                if self.fetching.fetches(resolved):
                    self.fetching.start(prediction, spec, version, self._hand_over)  # FETCHING
                    return
                model_input = resolved.value
            await self.weights.ensure(spec.weights_key)
            await self._hand_over(Job(prediction_id=prediction.id, spec=spec, input=model_input))

    async def _hand_over(self, job: Job) -> None:
        """Submit a HANDING_OVER run; it is IN_BACKEND once the backend has it, and a stop asked meanwhile
        is sent to the backend then."""
        await self.backend.submit(job, self.recorder)
        if self.whereabouts.submitted(job.prediction_id) is not None:
            await self.backend.cancel(job.prediction_id)

    async def _fail_queued(self, key: QueueKey, message: str) -> None:
        version_pk, kind, deployment = key
        async with self.database.session() as session:
            queued = await prediction_ops.queued_for(session, version_pk, kind, 1000, deployment)
        for prediction in queued:
            await self.leases.finish(prediction, Status.FAILED, message)

    # --- placement (see lifecycle/placement.py) ------------------------------------------------

    async def hardware_of(self, session: AsyncSession, version: Version, deployment: str) -> str:
        """The SKU a queued run of ``version`` runs on: its deployment's, else its model's."""
        return await self.placement.hardware_of(session, version, deployment)

    def spec_for(self, version: Version, mode: Mode, hardware: str = "cpu", deployment: str = "") -> VersionSpec:
        """The spec runs of ``version`` get on ``hardware`` (through ``deployment``: its own instances)."""
        return self.placement.spec(version, mode, hardware, deployment)

    # --- stopping a run wherever it is; housekeeping (see lifecycle/leases.py) -----------------

    async def stop_run(self, prediction_id: str, end: Status) -> Place:
        """Stop ``prediction_id`` wherever it is in this process (``end``: canceled, or aborted by its
        deadline): its fetch ends it at once; the backend is asked to cancel it; on its way there, the stop
        is remembered and acts as soon as it can. Returns where it was (ELSEWHERE: not here, nothing done)."""
        place = self.whereabouts.ask_stop(prediction_id, end)
        if place is Place.FETCHING:
            self.fetching.stop(prediction_id)
        elif place is Place.IN_BACKEND:
            await self.backend.cancel(prediction_id)
        return place

    async def cancel_requested(self, prediction_id: str) -> None:
        """A cancel of ``prediction_id`` was asked (here or, through another process, by its flag): stop it
        if it runs here; else nothing."""
        await self.stop_run(prediction_id, Status.CANCELED)

    def stop_fetching(self, prediction_id: str, end: Status) -> bool:
        """Stop fetching the inputs of ``prediction_id``, which then ends ``end``; False when it is not."""
        if self.whereabouts.where(prediction_id) is not Place.FETCHING:
            return False
        self.whereabouts.ask_stop(prediction_id, end)
        return self.fetching.stop(prediction_id)

    async def housekeeping(self) -> None:
        if await self.leases.housekeeping():
            self._fresh = True
            self.wake()

    def housekeeping_soon(self) -> None:
        """Run housekeeping at the next round (cancels asked while this process could not hear of them)."""
        self._next_housekeeping = 0.0
        self.wake()
