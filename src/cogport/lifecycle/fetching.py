"""A claimed run's input as the model gets it, and the fetch of its input URLs in a task of its own.

Inputs are validated once, when the run is created; here only this server's own file URLs in them are
resolved (signed now, so that they are fresh however long the run waited), and other URLs are fetched
(:class:`~cogport.lifecycle.files_in.InputFetcher`) in a task per run, so that a slow URL holds up nothing
else. A run being fetched is FETCHING (:mod:`cogport.lifecycle.whereabouts`); a stop asked meanwhile
(a cancel, a deadline) ends it so, without starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cogport.core.jobs import Job, VersionSpec
from cogport.core.kinds import RunKind
from cogport.db.engine import Database
from cogport.db.tables import Account, Prediction, Version
from cogport.errors import ValidationFailed
from cogport.files import urls as file_urls
from cogport.lifecycle import inputs
from cogport.lifecycle.files_in import InputFetcher, ModelInput, resolve_inputs
from cogport.lifecycle.recorder import Recorder
from cogport.lifecycle.whereabouts import Place, Whereabouts
from cogport.ops.principals import Principal
from cogport.runtime.weights import WeightsCache
from cogport.settings import Settings
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

HandOver = Callable[[Job], Awaitable[None]]
"""Submits a job to the backend (the run is HANDING_OVER)."""


class InputFetching:
    def __init__(
        self,
        database: Database,
        storage: Storage,
        settings: Settings,
        whereabouts: Whereabouts,
        recorder: Recorder,
        weights: WeightsCache,
        fetcher: InputFetcher | None,
    ) -> None:
        self.database = database
        self.storage = storage
        self.settings = settings
        self.whereabouts = whereabouts
        self.recorder = recorder
        self.weights = weights
        self.fetcher = fetcher
        """Fetches input URLs before a run starts (none: they reach the model as they are; tests only)."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._begun: set[str] = set()
        """Runs whose fetch task has begun (one that has not is never canceled: it sees the stop first)."""

    def fetches(self, resolved: ModelInput) -> bool:
        """Whether a run with this input has URLs to fetch (then :meth:`start` it)."""
        return bool(resolved.to_fetch) and self.fetcher is not None

    async def model_input(self, prediction: Prediction, version: Version | None, *, fetch: bool = False) -> ModelInput:
        """The input as the model gets it: this server's own file URLs resolved (at dispatch time, so
        signed URLs are fresh however long the prediction waited), other URLs fetched when ``fetch`` (else
        counted in ``to_fetch``). It was validated at create time."""
        name = "TrainingInput" if prediction.kind == RunKind.TRAINING else "Input"
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

    def start(self, prediction: Prediction, spec: VersionSpec, version: Version | None, hand_over: HandOver) -> None:
        """Fetch the run's input URLs in a task of its own, then hand it over (HANDING_OVER -> FETCHING)."""
        self.whereabouts.move(prediction.id, Place.FETCHING)
        task = asyncio.create_task(
            self._fetch(prediction, spec, version, hand_over), name=f"cogport-fetch-{prediction.id}"
        )
        self._tasks[prediction.id] = task

    async def _fetch(
        self, prediction: Prediction, spec: VersionSpec, version: Version | None, hand_over: HandOver
    ) -> None:
        run_id = prediction.id
        self._begun.add(run_id)
        try:
            stop = self.whereabouts.stop_asked(run_id)  # asked before the task began
            if stop is None:
                try:
                    await self._fetch_then_hand_over(prediction, spec, version, hand_over)
                    return
                except asyncio.CancelledError:
                    stop = self.whereabouts.stop_asked(run_id)
                    if self.whereabouts.where(run_id) is not Place.FETCHING:
                        raise  # the server stops while it is handed over
                    if stop is None:
                        self.whereabouts.move(run_id, Place.ELSEWHERE)  # the server stops: its claim lapses
                        raise
            await self.recorder.not_started(prediction, None, status=stop)
        finally:
            self._tasks.pop(run_id, None)
            self._begun.discard(run_id)

    async def _fetch_then_hand_over(
        self, prediction: Prediction, spec: VersionSpec, version: Version | None, hand_over: HandOver
    ) -> None:
        async with self.recorder.ending_on_failure(prediction):
            resolved = await self.model_input(prediction, version, fetch=True)
            await self.weights.ensure(spec.weights_key)
            job = Job(prediction_id=prediction.id, spec=spec, input=resolved.value)
            self.whereabouts.move(prediction.id, Place.HANDING_OVER)  # from here on, a stop goes to the backend
            del self._tasks[prediction.id]
            await hand_over(job)

    def stop(self, run_id: str) -> bool:
        """Stop fetching the inputs of ``run_id`` (its stop was asked in the whereabouts: it ends so); False
        when they are not being fetched."""
        task = self._tasks.get(run_id)
        if task is None:
            return False
        if run_id in self._begun:
            task.cancel()
        return True

    async def stop_all(self) -> None:
        """The server stops: every fetch is canceled (those runs' claims lapse; they run again)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for run_id in list(self._tasks):  # canceled before they began
            del self._tasks[run_id]
            if self.whereabouts.where(run_id) is Place.FETCHING:
                self.whereabouts.move(run_id, Place.ELSEWHERE)
