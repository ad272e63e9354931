"""Server-sent events for a prediction: ``GET /v1/streams/{token}`` (a capability URL, no token needed).

Only ``output``, ``logs``, ``error`` and ``done`` events, each with an ``id:`` (the official Python
client emits an event only after it has seen one). The id is ``"<outputs sent>-<log chars sent>"``,
so a client reconnecting with ``Last-Event-ID`` resumes without a lost or repeated chunk. A finished
prediction's stream replays everything and ends with ``done``. ``: keepalive`` comments go out at
least every 15 s.

A quiet stream costs nothing: it waits on the hub (lifecycle/hub.py), holding no database connection,
and reads the row only when it opens. A prediction running in this process is streamed from what its
recorder publishes, before it is written; any other (queued, or running in another API process) from its
row as the process's one watcher (lifecycle/watch.py) reads it for all the streams that follow it: when
another process announces a write (lifecycle/notify.py), and every ``watch.POLL`` seconds in any case.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from cogport.api.deps import BaseUrl, ResourcesDep
from cogport.core.status import TERMINAL
from cogport.db.tables import Prediction
from cogport.errors import NotFound
from cogport.files import urls as file_urls
from cogport.lifecycle.hub import Change
from cogport.ops import predictions as prediction_ops
from cogport.resources import Resources

router = APIRouter(tags=["streams"])

KEEPALIVE = 15.0


def sse(event: str, data: str, event_id: str) -> str:
    lines = data.split("\n") if data else [""]
    return f"event: {event}\nid: {event_id}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def _chunks(output: Any) -> list[Any]:
    if output is None:
        return []
    return list(output) if isinstance(output, list) else [output]


def _text(chunk: Any) -> str:
    return chunk if isinstance(chunk, str) else json.dumps(chunk)


@dataclass
class Cursor:
    outputs: int = 0
    log_chars: int = 0

    @property
    def id(self) -> str:
        return f"{self.outputs}-{self.log_chars}"

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        try:
            outputs, chars = (raw or "").split("-", 1)
            return cls(max(0, int(outputs)), max(0, int(chars)))
        except ValueError:
            return cls()


class PredictionStream:
    def __init__(
        self, request: Request, resources: Resources, prediction: Prediction, cursor: Cursor, base_url: str
    ) -> None:
        self.request = request
        self.prediction_id = prediction.id
        self.cursor = cursor
        self.base_url = base_url
        self.settings = resources.settings
        self.hub = resources.hub
        self.watcher = resources.watcher
        self.database = resources.database

    def _diff(self, output: Any, logs: str) -> list[str]:
        events = []
        chunks = _chunks(output)
        for chunk in chunks[self.cursor.outputs :]:
            self.cursor.outputs += 1
            # Output file URLs on the base this client used, as GET shows them.
            text = _text(file_urls.rebase_outputs(chunk, self.settings, self.base_url))
            events.append(sse("output", text, self.cursor.id))
        new_logs = logs[self.cursor.log_chars :]
        # Send whole lines only, unless the prediction is over (then the rest).
        cut = new_logs.rfind("\n") + 1
        if cut:
            self.cursor.log_chars += cut
            events.append(sse("logs", new_logs[: cut - 1], self.cursor.id))
        return events

    def _end(self, prediction: Prediction) -> list[str]:
        events = []
        rest = (prediction.logs or "")[self.cursor.log_chars :]
        if rest:
            self.cursor.log_chars += len(rest)
            events.append(sse("logs", rest, self.cursor.id))
        if prediction.status == "failed":
            events.append(sse("error", json.dumps({"detail": prediction.error or "Prediction failed"}), self.cursor.id))
            events.append(sse("done", json.dumps({"reason": "error"}), self.cursor.id))
        elif prediction.status in ("canceled", "aborted"):
            events.append(sse("done", json.dumps({"reason": "canceled"}), self.cursor.id))
        else:
            events.append(sse("done", "{}", self.cursor.id))
        return events

    async def _load(self) -> Prediction | None:
        async with self.database.reader() as session:
            return await prediction_ops.by_id(session, self.prediction_id)

    async def events(self) -> AsyncIterator[str]:
        queue = self.hub.subscribe(self.prediction_id)
        self.watcher.watch(self.prediction_id)
        try:
            prediction = await self._load()  # after subscribing: nothing falls between the two
            if prediction is None:
                return
            output, logs = prediction.output, prediction.logs or ""
            if prediction.status not in TERMINAL:
                # What this process's recorder published and has not written yet.
                ahead_output, ahead_logs = self.hub.latest(self.prediction_id)
                if ahead_output is not None:
                    output = ahead_output
                if ahead_logs is not None and len(ahead_logs) >= len(logs):
                    logs = ahead_logs
            for event in self._diff(output, logs):
                yield event
            last_sent = time.monotonic()
            while prediction.status not in TERMINAL:
                changes = await _next_changes(queue, KEEPALIVE - (time.monotonic() - last_sent))
                if not changes:
                    yield ": keepalive\n\n"
                    last_sent = time.monotonic()
                    continue
                row, output, logs = _merge(changes, logs)
                out = []
                if row is not None:
                    if row.status in TERMINAL:
                        prediction = row
                        break
                    out = self._diff(row.output, logs)
                out += self._diff(output, logs)
                for event in out:
                    yield event
                    last_sent = time.monotonic()
            for event in self._diff(prediction.output, prediction.logs or "") + self._end(prediction):
                yield event
        finally:
            self.watcher.unwatch(self.prediction_id)
            self.hub.unsubscribe(self.prediction_id, queue)


async def _next_changes(queue: asyncio.Queue[Change], within: float) -> list[Change]:
    """The changes announced since the last look, waiting up to ``within`` seconds for one (none: time for a
    keep-alive). No database connection is held meanwhile."""
    changes = []
    if queue.empty():
        try:
            async with asyncio.timeout(max(0.0, within)):
                changes.append(await queue.get())
        except TimeoutError:
            return []
    while not queue.empty():
        changes.append(queue.get_nowait())
    return changes


def _merge(changes: list[Change], logs: str) -> tuple[Prediction | None, Any, str]:
    """``(row, output, logs)`` of a burst of changes: the latest row read (the end's, or the watcher's for a
    run held elsewhere), the latest output this process's recorder published, and the longest logs seen.
    Changes without data (a start, another process's change: the watcher reads that row and publishes it)
    and an end that could not be recorded (the watcher reads the row from then on) carry nothing here."""
    row: Prediction | None = None
    output: Any = None
    for change in changes:
        data = change.data
        if isinstance(data, Prediction):
            row = data
            if len(data.logs or "") >= len(logs):
                logs = data.logs or ""
        elif change.kind == "output" and data is not None:
            output = data
        elif change.kind == "logs" and data is not None and len(str(data)) >= len(logs):
            logs = str(data)
    return row, output, logs


@router.get("/v1/streams/{token}")
async def stream(
    token: str,
    request: Request,
    resources: ResourcesDep,
    base_url: BaseUrl,
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
) -> StreamingResponse:
    async with resources.database.reader() as session:
        prediction = await prediction_ops.by_stream_token(session, token)
    if prediction is None:
        raise NotFound("This stream does not exist (or its prediction was deleted)")
    events = PredictionStream(request, resources, prediction, Cursor.parse(last_event_id), base_url).events()
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
