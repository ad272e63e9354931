"""Runs (predictions and trainings) as the API sees them: create, wait for, cancel.

:meth:`Runs.create` is the one place a run is made, for every create route (predictions, model
predictions, trainings; deployments next): parse ``Prefer``/``Cancel-After``, find the version, validate
and resolve the input once, write the row (through the group writer), claim and start it at once when
the caller waits and a slot is free (the job starts while its row is being committed; the answer waits
for both), else queue it, and wait if asked.

Owns nothing but references: the database, the writer, the hub, the dispatcher and the backend all
belong to the app's lifespan. Routes call this; it calls ``ops`` for rows and ``status`` for transitions.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.backends.base import Backend
from cogport.core.kinds import RunKind
from cogport.core.status import TERMINAL, Status
from cogport.db import faults
from cogport.db.engine import Database
from cogport.db.tables import Account, Model, Prediction, Version, utcnow
from cogport.db.writer import GroupWriter, Tx
from cogport.errors import BackendUnavailable, BadRequest, InvalidVersion, NotFound, PredictionNotFound, Unprocessable
from cogport.lifecycle import inputs
from cogport.lifecycle.dispatcher import Dispatcher
from cogport.lifecycle.files_in import resolve_inputs
from cogport.lifecycle.hub import Change, Hub
from cogport.lifecycle.recorder import RecordingFailed
from cogport.lifecycle.status import PREDICTIONS, Announcement, Transitions, read
from cogport.lifecycle.whereabouts import Place
from cogport.ops import models as model_ops
from cogport.ops import predictions as prediction_ops
from cogport.ops import versions as version_ops
from cogport.ops.principals import Principal
from cogport.schemas import cog
from cogport.settings import Settings
from cogport.storage.base import Storage

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_PREFER_WAIT = re.compile(r"^wait(?:=(\d+))?$")
MIN_DEADLINE = 5.0
MAX_DEADLINE = 30 * 86400.0
POLL_INTERVAL = 0.25


def _visible(row: Prediction, principal: Principal, kind: str | None) -> Prediction:
    """``row`` if the caller may read it as a run of ``kind`` (anyone else gets 404, as from the database)."""
    if row.account_id != principal.id or (kind is not None and row.kind != kind):
        raise PredictionNotFound()
    return row


def parse_prefer(header: str | None, maximum: int) -> int | None:
    """Seconds to wait from ``Prefer: wait[=N]``; None when the header asks for no wait."""
    if not header:
        return None
    for token in (t.strip() for t in header.split(",")):
        match = _PREFER_WAIT.match(token.replace(" ", ""))
        if match:
            seconds = int(match.group(1)) if match.group(1) else maximum
            if seconds < 1:
                raise BadRequest("Prefer: wait=N needs N between 1 and 60")
            return min(seconds, maximum)
        if token.startswith("wait"):
            raise BadRequest(f"Invalid Prefer header {header!r}: use 'wait' or 'wait=N' with N from 1 to 60")
    return None


def parse_cancel_after(header: str | None) -> float | None:
    """Seconds from a ``Cancel-After`` duration (``30s``, ``5m``, ``1h30m45s``, or bare seconds)."""
    if header is None or not header.strip():
        return None
    text = header.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not match or not any(match.groups()):
            raise BadRequest(f"Invalid Cancel-After {header!r}: use a duration such as 30s, 5m or 1h30m") from None
        hours, minutes, secs = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)
    if not math.isfinite(seconds) or seconds > MAX_DEADLINE:
        raise BadRequest(f"Cancel-After must be a duration of at most {MAX_DEADLINE // 86400:.0f} days")
    if seconds < MIN_DEADLINE:
        raise BadRequest(f"Cancel-After must be at least {MIN_DEADLINE:.0f} seconds")
    return seconds


def deadline_after(seconds: float | None) -> Any:
    return None if seconds is None else utcnow() + timedelta(seconds=seconds)


async def resolve_version(session: AsyncSession, principal: Principal, ref: str) -> tuple[Model, Account, Version]:
    """``owner/name:id``, a bare id, or ``owner/name`` (its latest version) -> the version, if visible."""
    ref = ref.strip()
    try:
        if ":" in ref:
            model_ref, _, version_id = ref.partition(":")
            owner, _, name = model_ref.partition("/")
            model, owner_account = await model_ops.find(session, principal, owner, name)
            version = await version_ops.get(session, model, version_id)
            return model, owner_account, version
        if _HEX64.match(ref):
            found = await version_ops.find_visible(session, principal, ref)
            if found is None:
                raise InvalidVersion()
            version, model, owner_account = found
            return model, owner_account, version
        if ref.count("/") == 1:
            owner, name = ref.split("/")
            model, owner_account = await model_ops.find(session, principal, owner, name)
            return model, owner_account, await latest_version(session, model)
    except NotFound as exc:
        raise InvalidVersion() from exc
    raise InvalidVersion()


async def latest_version(session: AsyncSession, model: Model) -> Version:
    if model.latest_version_pk is None:
        raise InvalidVersion("This model has no versions yet; push one with `cogport push`")
    version = await session.get(Version, model.latest_version_pk)
    if version is None or version.deleting:
        raise InvalidVersion()
    return version


class VersionRefs:
    """Recently resolved version references, per caller, for ``ttl`` seconds.

    Versions never change, but a model's visibility can: a change reaches this process's create calls
    within ``ttl`` (default 2 s). Saves the lookup on every create of a busy model.
    """

    def __init__(self, ttl: float = 2.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, frozenset[int]], tuple[float, tuple[Model, Account, Version]]] = {}

    async def resolve(self, session: AsyncSession, principal: Principal, ref: str) -> tuple[Model, Account, Version]:
        key = (ref, principal.acting_ids)
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        found = await resolve_version(session, principal, ref)
        for row in found:
            # Detached now, so a rollback of this session cannot expire what the cache hands out later.
            session.expunge(row)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (now + self.ttl, found)
        return found


Resolver = Callable[[AsyncSession], Awaitable[tuple[Model, Account, Version]]]
"""Finds the version to run (and its model and owner)."""
DestinationResolver = Callable[[AsyncSession], Awaitable[Model]]
"""For trainings: finds the model the trained version goes to."""


@dataclass(frozen=True)
class RunRequest:
    """What a create route hands over: the body's fields and the headers that shape the call."""

    input: Any
    resolve: Resolver
    webhook: str | None = None
    webhook_completed: str | None = None
    webhook_events_filter: list[str] | None = None
    stream: bool = False
    prefer: str | None = None
    cancel_after: str | None = None
    destination: DestinationResolver | None = None
    """Set for a training: its input is checked against ``TrainingInput``; the row remembers the model."""
    deployment: str | None = None
    """``owner/name`` of the deployment it runs through (its instances, on ``hardware``)."""
    hardware: str | None = None
    """The SKU it runs on; None: the model's."""


@dataclass(frozen=True)
class Created:
    row: Prediction
    waited: str | None
    """``Preference-Applied`` when the caller waited (``wait`` or ``wait=N``), else None."""

    @property
    def final(self) -> bool:
        return self.row.status in TERMINAL


def hub_hook(hub: Hub) -> Callable[[Announcement], None]:
    """The after-commit hook that tells this process's waiters and streams a run has ended."""

    def announce(announcement: Announcement) -> None:
        if announcement.kind == "completed":
            hub.publish(Change(announcement.prediction.id, "completed", announcement.prediction))

    return announce


class Runs:
    def __init__(
        self,
        database: Database,
        writer: GroupWriter,
        transitions: Transitions,
        hub: Hub,
        dispatcher: Dispatcher,
        backend: Backend,
        storage: Storage,
        settings: Settings,
        *,
        notify_cancel: Callable[[str], None] | None = None,
    ) -> None:
        self.notify_cancel = notify_cancel
        """Tells the process running a prediction that its cancel was asked (see lifecycle/notify.py)."""
        self.database = database
        self.writer = writer
        self.transitions = transitions
        self.hub = hub
        self.dispatcher = dispatcher
        self.backend = backend
        self.storage = storage
        self.settings = settings
        self.refs = VersionRefs()

    @property
    def node(self) -> str:
        return self.dispatcher.node

    async def create(self, principal: Principal, base_url: str, request: RunRequest) -> Created:
        """Make a run (see the module docstring); returns it, waited for when ``Prefer: wait`` asked."""
        settings = self.settings
        wait = parse_prefer(request.prefer, settings.sync_wait_max)
        deadline = deadline_after(parse_cancel_after(request.cancel_after))
        training = request.destination is not None
        hardware = request.hardware
        async with self.database.reader() as session:
            model, owner, version = await request.resolve(session)
            target = await request.destination(session) if request.destination is not None else None
            if hardware is None and request.deployment and self.dispatcher.deployment_hardware is not None:
                hardware = await self.dispatcher.deployment_hardware(session, request.deployment)
            schema = version.openapi_schema or {}
            checked = inputs.validate(schema, request.input, component_name="TrainingInput" if training else "Input")
            # Checks the caller may use every file it names; the sync fast path hands this to the model
            # unless input URLs are left to fetch (the dispatcher fetches them, off the request).
            resolved = await resolve_inputs(session, self.storage, principal, schema, checked, base_url, settings)
            model_input = resolved.value
        streamable = not training and cog.can_stream(schema)
        if request.stream and not streamable:
            raise Unprocessable("Streaming not supported for the output type of the requested version.")
        kind = RunKind.TRAINING if training else RunKind.PREDICTION
        hardware = hardware or model.hardware or "cpu"
        fast = (
            not resolved.to_fetch
            and wait is not None
            and self.dispatcher.can_start_now(version, kind, hardware, request.deployment or "")
        )
        row = prediction_ops.new(
            principal,
            model=model,
            model_ref=f"{owner.username}/{model.name}",
            version=version,
            input=checked.value,
            kind=kind,
            webhook=request.webhook or request.webhook_completed,
            webhook_events_filter=list(request.webhook_events_filter)
            if request.webhook_events_filter is not None
            else (["completed"] if request.webhook_completed and not request.webhook else None),
            deadline=deadline,
            deployment=request.deployment,
            streamable=streamable,
            destination_model_id=None if target is None else target.id,
            claimed_by=self.node if fast else None,
            lease=settings.lease_seconds,
        )
        if fast and not training:
            # Started before its row is written: the recorder writes it a moment later, or with its end
            # (a fast sync prediction costs one write); the caller hears of it only once it is written.
            await self.dispatcher.start_claimed(row, version, model_input, hardware=hardware, written=False)
        else:
            written = self.writer.submit(lambda tx: prediction_ops.insert_row(tx, row))
            if fast:
                # Started while its row is committed (the writer writes in order: the row lands before
                # any write of the job's); the caller hears of it only once both are done.
                await self.dispatcher.start_claimed(row, version, model_input, hardware=hardware)
            try:
                await asyncio.shield(written)
            except BaseException:
                if fast:
                    await self.backend.cancel(row.id)
                    self.dispatcher.forget_claimed(row.id)
                raise
            if not fast:
                self.dispatcher.new_work(row, version, hardware)
        if wait is None:
            return Created(row, None)
        applied = f"wait={wait}" if request.prefer and "=" in request.prefer else "wait"
        return Created(await self.wait(row.id, wait, current=row), applied)

    async def read(
        self, session: AsyncSession, principal: Principal, prediction_id: str, kind: str | None = RunKind.PREDICTION
    ) -> Prediction:
        """One of the caller's runs as it stands: the stored row, unless this process holds a newer one. A
        caller that was answered with a run can always read it back from the process that answered: an end
        not written yet (the database was out) is read as it will be written; a run this process records
        whose row is not written yet (a sync run started at once), or any it holds while the database is
        out, as it holds it. Anyone else's run, or one of another ``kind``, is not found."""
        recorder = self.dispatcher.recorder
        pending = recorder.pending_end(prediction_id)
        if pending is not None:
            return _visible(pending, principal, kind)
        try:
            return await prediction_ops.get(session, principal, prediction_id, kind)
        except PredictionNotFound:
            held = recorder.held(prediction_id)
            if held is None:
                raise
            return _visible(held, principal, kind)
        except Exception as exc:
            held = recorder.held(prediction_id) if faults.is_outage(exc) else None
            if held is None:
                raise
            return _visible(held, principal, kind)

    async def reload(self, prediction_id: str, held: Prediction | None = None) -> Prediction:
        """The row as stored now; ``held`` (the row this process holds) while it is not written yet, or while
        the database is out (the run goes on here: its end reaches the waiter through the hub)."""
        try:
            async with self.database.session() as session:
                prediction = await prediction_ops.by_id(session, prediction_id)
        except Exception as exc:
            if held is None or not faults.is_outage(exc):
                raise
            return held
        if prediction is None:
            if held is not None:
                return held
            raise PredictionNotFound()
        return prediction

    async def wait(self, prediction_id: str, seconds: float, *, current: Prediction | None = None) -> Prediction:
        """Wait up to ``seconds`` for the prediction to end; returns its latest state either way.

        The end is announced by the hub: with the final row when this process runs it, without it (then
        the row is read) when another process does (lifecycle/notify.py); the database is polled too.
        ``current`` spares the first read when the caller has the row.
        """
        deadline = time.monotonic() + seconds
        done = self.hub.completion(prediction_id)
        try:
            prediction = current if current is not None else await self.reload(prediction_id)
            while prediction.status not in TERMINAL:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return await self.reload(prediction_id, current)
                try:
                    final = await asyncio.wait_for(asyncio.shield(done), timeout=min(remaining, POLL_INTERVAL * 4))
                except TimeoutError:
                    prediction = await self.reload(prediction_id, current)
                    continue
                if isinstance(final, Prediction):
                    return final
                if isinstance(final, RecordingFailed):
                    raise BackendUnavailable(f"The prediction ran but its result could not be recorded: {final}")
                prediction = await self.reload(prediction_id, current)
            return prediction
        finally:
            self.hub.forget(prediction_id, done)

    async def cancel(self, prediction: Prediction, *, wait: float = 5.0) -> Prediction:
        """Cancel: queued -> canceled at once; running -> the model is asked to stop, and the
        prediction reports ``canceled`` once it has; terminal -> returned as it is."""
        if prediction.status in TERMINAL:
            return prediction
        # Where it is here (lifecycle/whereabouts.py): fetched or in the backend, it is stopped there; on
        # its way to the backend the cancel waits for it there, and its row says so too (below).
        place = await self.dispatcher.stop_run(prediction.id, Status.CANCELED)
        if place in (Place.FETCHING, Place.IN_BACKEND):
            return await self.wait(prediction.id, wait)

        def cancel_queued(tx: Tx) -> tuple[Prediction, bool]:
            current = read(tx, prediction.id)
            if current.status == Status.STARTING and current.claimed_by is None:
                return self.transitions.transition(tx, current, Status.CANCELED)
            # Running in another process: it hears of it at once (notify_cancel), or sees the flag at its
            # next housekeeping (Dispatcher.housekeeping).
            tx.conn.execute(update(PREDICTIONS).where(PREDICTIONS.c.id == prediction.id).values(cancel_requested=True))
            notify = self.notify_cancel
            if notify is not None and current.status not in TERMINAL:
                tx.on_commit(lambda: notify(prediction.id))
            return current, False

        current, changed = await self.writer.run(cancel_queued)
        if changed or current.status in TERMINAL:
            return current
        return await self.wait(prediction.id, wait)
