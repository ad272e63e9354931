"""The dispatcher: hands queued predictions to the backend, in order, fairly across versions.

The queue is the ``predictions`` table. A prediction is *claimed* by this process (``claimed_by`` =
its node id, with a lease that it renews while the job runs) before it is submitted, so several
API processes can share one database without running anything twice. Claims are taken in batches
(one statement, through the group writer): as many as the backend can start at once plus
``PREFETCH`` rounds of each version's slots, so that a slot that frees up takes the next job at once
instead of waiting for the dispatcher. Claims whose lease ran out belong to a process that died:
queued work is put back, work that had started is failed with a clear error. Deadlines
(``Cancel-After``) are enforced here too.

Inputs are validated once, when the run is created; here only this server's own file URLs in them are
resolved (signed now, so that they are fresh however long the run waited), and only for versions
with file inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from cogport.backends.base import Backend
from cogport.background import Service
from cogport.build import bundles
from cogport.core.jobs import Job, VersionSpec
from cogport.core.kinds import Mode, RunKind
from cogport.core.status import Status
from cogport.db.engine import Database
from cogport.db.tables import Account, Model, Prediction, Version
from cogport.db.writer import GroupWriter
from cogport.errors import SetupFailed, ValidationFailed
from cogport.files import urls as file_urls
from cogport.lifecycle import inputs
from cogport.lifecycle.files_in import InputFetcher, ModelInput, resolve_inputs
from cogport.lifecycle.in_hand import InHand
from cogport.lifecycle.recorder import Recorder
from cogport.lifecycle.status import Transitions
from cogport.ops import predictions as prediction_ops
from cogport.ops.principals import Principal
from cogport.runtime.weights import WeightsCache
from cogport.settings import Settings
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

QueueKey = tuple[int, str, str]
"""``(version_pk, kind, deployment)``: the runs that share a spec (``deployment`` is ``""`` for none)."""
DeploymentHardware = Callable[[AsyncSession, str], Awaitable[str | None]]


def _queue_key(prediction: Prediction) -> QueueKey:
    return prediction.version_pk, prediction.kind, prediction.deployment or ""


def _mode(kind: str) -> Mode:
    return RunKind(kind).mode


BATCH = 64
PREFETCH = 2
"""Rounds of a version's slots claimed ahead of its free slots (they wait in the backend)."""
RESTART_ERROR = "The prediction was interrupted because the server running it stopped; please run it again."


class _Fetch:
    """A run whose input URLs are being fetched."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.end: Status | None = None
        """How it ends when its task is canceled: ``canceled`` or ``aborted`` (None: the server stops)."""


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
        self.fetcher = fetcher
        """Fetches input URLs before a run starts (none: they reach the model as they are; tests only)."""
        self.database = database
        self.writer = writer
        self.transitions = transitions
        self.backend = backend
        self.recorder = recorder
        self.storage = storage
        self.settings = settings
        self.weights = WeightsCache(storage, settings.data_dir / "cache" / "weights")
        """Trained weights copied out of storage for the runtime (see :mod:`cogport.runtime.weights`)."""
        self.node = node
        self.lease = lease
        self._specs: dict[tuple[int, str, str, str], VersionSpec] = {}
        self._hardware: dict[QueueKey, str] = {}
        """The SKU each queue's runs run on."""
        self.deployment_hardware: DeploymentHardware | None = None
        """How a deployment's SKU is found (set by the app once deployments exist)."""
        self._versions: dict[int, Version] = {}
        self._next_housekeeping = 0.0
        self._backlog = False
        self._fresh = True
        self._waiting: dict[QueueKey, InHand] = {}
        self._handing_over: set[str] = set()
        """Claimed by this process and not yet in ``backend.running()``."""
        self._fetching: dict[str, _Fetch] = {}
        """Claimed runs whose input URLs are being fetched (then submitted)."""
        self._cancel_on_submit: set[str] = set()
        """Runs being handed over whose cancel was asked meanwhile: canceled once in the backend."""

    async def run_once(self) -> bool:
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + max(self.lease / 3, 0.2)
            await self.housekeeping()
            self._fresh = True  # also picks up work queued by other processes
        return await self.dispatch()

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
        return self.backend.has_capacity(self._spec(version, _mode(kind), hardware, deployment))

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
        spec = self._spec(version, _mode(prediction.kind), hardware, prediction.deployment or "")
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
                    self._hardware[key] = await self.hardware_of(session, version, deployment)
            if version is None:
                waiting.clear()
                return 0
            self._versions[version_pk] = version  # versions are immutable: keep them
        version = self._versions[version_pk]
        spec = self._spec(version, _mode(kind), self._hardware.get(key, "cpu"), deployment)
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
        batch = waiting.take(room)
        if waiting:
            self._backlog = True
        ids = [p.id for p in batch]
        self._handing_over.update(ids)
        try:
            claimed = set(await self.writer.run(lambda tx: prediction_ops.claim_many(tx, ids, self.node, self.lease)))
            submitted = 0
            # A run read earlier may have been canceled or taken by another process since: the claim says.
            for prediction in batch:
                if prediction.id in claimed:
                    set_committed_value(prediction, "claimed_by", self.node)
                    await self._submit(prediction, spec)
                    submitted += 1
                    if prediction.id in self._cancel_on_submit:
                        self._cancel_on_submit.discard(prediction.id)
                        await self.cancel_requested(prediction.id)  # now fetching or in the backend
            return submitted
        finally:
            self._handing_over.difference_update(ids)
            self._cancel_on_submit.difference_update(ids)

    async def _submit(
        self,
        prediction: Prediction,
        spec: VersionSpec,
        model_input: dict[str, Any] | None = None,
        *,
        written: bool = True,
    ) -> None:
        self.recorder.hold(prediction, written=written)
        async with self._ending_on_failure(prediction):
            if model_input is None:
                resolved = await self._model_input(prediction)
                if resolved.to_fetch and self.fetcher is not None:
                    self._fetch_then_submit(prediction, spec)
                    return
                model_input = resolved.value
            await self.weights.ensure(spec.weights_key)
            await self.backend.submit(Job(prediction_id=prediction.id, spec=spec, input=model_input), self.recorder)

    @contextlib.asynccontextmanager
    async def _ending_on_failure(self, prediction: Prediction) -> AsyncIterator[None]:
        """A run that cannot be handed to the backend ends ``failed``, with the reason."""
        try:
            yield
        except ValidationFailed as exc:
            await self.recorder.not_started(prediction, f"Invalid input: {exc.detail.strip()}")
        except SetupFailed as exc:
            await self.recorder.not_started(prediction, exc.detail)
        except Exception as exc:
            log.exception("submitting %s failed", prediction.id)
            await self.recorder.not_started(prediction, f"The model could not be started: {exc}")

    def _fetch_then_submit(self, prediction: Prediction, spec: VersionSpec) -> None:
        """Fetch the run's input URLs in a task of its own (a slow URL holds up nothing else), then submit.
        Canceled or past its deadline while fetching: it ends so, without starting."""
        fetch = _Fetch()
        self._fetching[prediction.id] = fetch

        async def run() -> None:
            try:
                async with self._ending_on_failure(prediction):
                    resolved = await self._model_input(prediction, fetch=True)
                    await self.weights.ensure(spec.weights_key)
                    job = Job(prediction_id=prediction.id, spec=spec, input=resolved.value)
                    self._handing_over.add(prediction.id)
                    del self._fetching[prediction.id]  # from here on, a cancel goes to the backend
                    await self.backend.submit(job, self.recorder)
            except asyncio.CancelledError:
                if fetch.end is None:  # the server stops: the claim lapses and the run is queued again
                    raise
                await self.recorder.not_started(prediction, None, status=fetch.end)
            finally:
                self._fetching.pop(prediction.id, None)
                self._handing_over.discard(prediction.id)

        fetch.task = asyncio.create_task(run(), name=f"cogport-fetch-{prediction.id}")

    def stop_fetching(self, prediction_id: str, end: Status) -> bool:
        """Stop fetching the inputs of ``prediction_id``, which then ends ``end``; False when it is not."""
        fetch = self._fetching.get(prediction_id)
        if fetch is None or fetch.task is None:
            return False
        fetch.end = end
        fetch.task.cancel()
        return True

    async def stop(self) -> None:
        await super().stop()
        tasks = [fetch.task for fetch in self._fetching.values() if fetch.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _model_input(self, prediction: Prediction, *, fetch: bool = False) -> ModelInput:
        """The input as the model gets it: this server's own file URLs resolved (at dispatch time, so
        signed URLs are fresh however long the prediction waited), other URLs fetched when ``fetch`` (else
        counted in ``to_fetch``). It was validated at create time."""
        name = "TrainingInput" if prediction.kind == RunKind.TRAINING else "Input"
        version = self._versions.get(prediction.version_pk)
        schema = (version.openapi_schema if version else None) or {}
        checked = inputs.stored(schema, prediction.input, component_name=name)
        if not checked.file_fields and inputs.component(schema, name) is not None:
            return ModelInput(checked.value)
        async with self.database.session() as session:
            if version is None:
                version = await session.get(Version, prediction.version_pk)
                schema = (version.openapi_schema if version else None) or {}
                checked = inputs.stored(schema, prediction.input, component_name=name)
            account = await session.get(Account, prediction.account_id)
            if account is None:
                raise ValidationFailed([("required", "input", "the prediction's account no longer exists")])
            principal = Principal(account=account, acting_ids=frozenset({account.id}))
            return await resolve_inputs(
                session,
                self.storage,
                principal,
                schema,
                checked,
                file_urls.public_base_url(self.settings),
                self.settings,
                fetcher=self.fetcher if fetch else None,
                prediction_id=prediction.id,
                any_host=True,  # created on the request's host, which is not known here
            )

    async def hardware_of(self, session: AsyncSession, version: Version, deployment: str) -> str:
        """The SKU a queued run of ``version`` runs on: its deployment's, else its model's (read once a
        refresh; a change reaches runs queued after it)."""
        if deployment and self.deployment_hardware is not None:
            found = await self.deployment_hardware(session, deployment)
            if found is not None:
                return found
        model = await session.get(Model, version.model_id)
        return model.hardware if model is not None and model.hardware else "cpu"

    def spec_for(self, version: Version, mode: Mode, hardware: str = "cpu", deployment: str = "") -> VersionSpec:
        """The spec runs of ``version`` get on ``hardware`` (through ``deployment``: its own instances)."""
        return self._spec(version, mode, hardware, deployment)

    def _spec(self, version: Version, mode: Mode, hardware: str = "cpu", deployment: str = "") -> VersionSpec:
        key = (version.pk, mode, hardware, deployment)
        spec = self._specs.get(key)
        if spec is None:
            ref = version.train_ref if mode == "train" else version.predict_ref
            weights = str(self.weights.path_for(version.weights_key)) if version.weights_key else None
            spec = VersionSpec(
                version_pk=version.pk,
                version_id=version.id,
                mode=mode,
                source_path=version.source_path or "",
                venv_path=version.venv_path or "",
                ref=ref or "",
                concurrency=max(1, version.concurrency) if mode == "predict" else 1,
                environment={str(k): str(v) for k, v in (version.environment or {}).items()},
                weights=weights,
                weights_key=version.weights_key,
                hardware=hardware,
                pool=f"deployment:{deployment}" if deployment else "",
                tenant=version.model_id,
                bundle_key=bundles.bundle_key(version.id),
            )
            self._specs[key] = spec
        return spec

    async def _fail_queued(self, key: QueueKey, message: str) -> None:
        version_pk, kind, deployment = key
        async with self.database.session() as session:
            queued = await prediction_ops.queued_for(session, version_pk, kind, 1000, deployment)
        for prediction in queued:
            await self._finish(prediction, Status.FAILED, message)

    async def _finish(self, prediction: Prediction | str, to: Status, error: str | None = None) -> None:
        await self.writer.run(lambda tx: self.transitions.transition(tx, prediction, to, error=error))

    # --- housekeeping: leases, lost work, deadlines ------------------------------------------

    _database_out = False
    """The last housekeeping could not reach the database (nobody could renew a lease meanwhile)."""
    _grace_until = 0.0
    """Until then (monotonic) other processes' lapsed claims are not taken for lost: after a database outage
    every process needs one round to renew the leases that ran out while none could."""

    async def housekeeping(self) -> None:
        try:
            async with self.database.session() as session:
                candidates = await prediction_ops.expired_claims(session, self.node)
                overdue = await prediction_ops.past_deadline(session)
                cancels = await prediction_ops.cancel_requests(session, self.node)
            # Read after the rows: a claim committed before that read is handed over or running by now.
            running = self.backend.running() | self._handing_over | self._fetching.keys() | self.recorder.in_hand()
            await self.writer.run(lambda tx: prediction_ops.renew_leases(tx, self.node, running, self.lease))
        except Exception:
            self._database_out = True
            raise
        if self._database_out:
            self._database_out = False
            self._grace_until = time.monotonic() + self.lease
        others_lost = time.monotonic() >= self._grace_until
        lost = [p for p in candidates if (others_lost if p.claimed_by != self.node else p.id not in running)]
        for prediction_id in cancels:
            await self.cancel_requested(prediction_id)
        for prediction in lost:
            if prediction.status == Status.STARTING:
                await self.writer.run(
                    partial(prediction_ops.unclaim, prediction_id=prediction.id, claimed_by=prediction.claimed_by)
                )
                log.info("requeued %s: its runner is gone", prediction.id)
            elif prediction.cancel_requested:  # its cancel was asked: that is how it ended
                await self._finish(prediction, Status.CANCELED)
            else:
                await self._finish(prediction, Status.FAILED, RESTART_ERROR)
        for prediction in overdue:
            await self._deadline(prediction)
        if lost:
            self._fresh = True
            self.wake()

    async def cancel_requested(self, prediction_id: str) -> None:
        """A cancel of ``prediction_id`` was asked (here or, through another process, by its flag): stop it
        if it runs here (being fetched, handed over or in the backend); else nothing."""
        if self.stop_fetching(prediction_id, Status.CANCELED):
            return
        if prediction_id in self.backend.running():
            await self.backend.cancel(prediction_id)
        elif prediction_id in self._handing_over:
            self._cancel_on_submit.add(prediction_id)  # claimed, not in the backend yet

    def housekeeping_soon(self) -> None:
        """Run housekeeping at the next round (cancels asked while this process could not hear of them)."""
        self._next_housekeeping = 0.0
        self.wake()

    async def _deadline(self, prediction: Prediction) -> None:
        if self.stop_fetching(prediction.id, Status.ABORTED):
            return
        if prediction.id in self.backend.running():
            await self.backend.cancel(prediction.id)
        elif prediction.status == Status.STARTING and prediction.claimed_by in (None, self.node):
            if prediction.id not in self._handing_over:
                await self._finish(prediction, Status.ABORTED)
        elif prediction.claimed_by is None:
            await self._finish(prediction, Status.CANCELED)
