"""Runs (predictions and trainings) as the API sees them: create, wait for, cancel.

Owns nothing but references: the database, the hub, the dispatcher and the backend all belong to
the app's lifespan. Routes call this; it calls ``ops`` for rows and ``status`` for transitions.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.backends.base import Backend
from cogport.db.engine import Database
from cogport.db.tables import Account, Model, Prediction, Version, utcnow
from cogport.errors import BadRequest, InvalidVersion, NotFound
from cogport.lifecycle.dispatcher import Dispatcher
from cogport.lifecycle.hub import Hub
from cogport.lifecycle.recorder import Recorder
from cogport.lifecycle.status import TERMINAL, Status, transition
from cogport.ops import models as model_ops
from cogport.ops import predictions as prediction_ops
from cogport.ops import versions as version_ops
from cogport.ops.principals import Principal

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_PREFER_WAIT = re.compile(r"^wait(?:=(\d+))?$")
MIN_DEADLINE = 5.0
POLL_INTERVAL = 0.25


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


class Runs:
    def __init__(
        self, database: Database, hub: Hub, recorder: Recorder, dispatcher: Dispatcher, backend: Backend
    ) -> None:
        self.database = database
        self.hub = hub
        self.recorder = recorder
        self.dispatcher = dispatcher
        self.backend = backend
        self.refs = VersionRefs()

    @property
    def node(self) -> str:
        return self.dispatcher.node

    def submitted(self) -> None:
        self.dispatcher.new_work()

    def can_start_now(self, version: Version, kind: str) -> bool:
        return self.dispatcher.can_start_now(version, kind)

    async def start_claimed(self, prediction: Prediction, version: Version) -> None:
        await self.dispatcher.start_claimed(prediction, version)

    async def reload(self, prediction_id: str) -> Prediction:
        async with self.database.session() as session:
            prediction = await prediction_ops.by_id(session, prediction_id)
        assert prediction is not None
        return prediction

    async def wait(self, prediction_id: str, seconds: float, *, current: Prediction | None = None) -> Prediction:
        """Wait up to ``seconds`` for the prediction to end; returns its latest state either way.

        The end is announced by the hub (with the final row) when this process runs it; otherwise
        the database is polled. ``current`` spares the first read when the caller has the row.
        """
        deadline = time.monotonic() + seconds
        done = self.hub.completion(prediction_id)
        try:
            prediction = current if current is not None else await self.reload(prediction_id)
            while prediction.status not in TERMINAL:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return await self.reload(prediction_id)
                try:
                    final = await asyncio.wait_for(asyncio.shield(done), timeout=min(remaining, POLL_INTERVAL * 4))
                except TimeoutError:
                    prediction = await self.reload(prediction_id)
                    continue
                if isinstance(final, Prediction):
                    return final
                prediction = await self.reload(prediction_id)
            return prediction
        finally:
            self.hub.forget(prediction_id, done)

    async def cancel(self, prediction: Prediction, *, wait: float = 5.0) -> Prediction:
        """Cancel: queued -> canceled at once; running -> the model is asked to stop, and the
        prediction reports ``canceled`` once it has; terminal -> returned as it is."""
        if prediction.status in TERMINAL:
            return prediction
        if prediction.id in self.backend.running():
            await self.backend.cancel(prediction.id)
            return await self.wait(prediction.id, wait)
        async with self.database.session() as session:
            current = await prediction_ops.by_id(session, prediction.id)
            assert current is not None
            if current.status == Status.STARTING and current.claimed_by is None:
                current, changed = await transition(session, prediction.id, Status.CANCELED)
            else:
                # Running in another process: it sees the flag and cancels (see Dispatcher.housekeeping).
                changed = False
                await session.execute(
                    update(Prediction).where(Prediction.id == prediction.id).values(cancel_requested=True)
                )
        if changed:
            await self.recorder.announce(current, "completed")
            return current
        return await self.wait(prediction.id, wait)
