"""One prediction on an instance: coglet's SSE events translated into :class:`JobEvents` calls.

coglet event → callback:

* ``start {id, status}`` → ``started(job)``
* ``log {data, source}`` → ``logs(job, data)`` (new text only)
* ``output {chunk, index}`` → ``output(job, [chunks so far])``, for iterator outputs only; a plain
  output arrives as one chunk just before ``completed``, which carries it anyway
* ``metric`` → nothing (``completed`` carries all metrics)
* ``completed {id, status, output, error, logs, metrics}`` → ``finished(job, outcome)``

With a ``file_sink`` (versions whose output is a list of files, run without ``--upload-url``), each
``data:`` URL coglet sends as an output item is kept as an output file as it arrives, and both the
streamed outputs and the final one carry the kept file's URL in its place, in the model's order.

Callbacks are awaited in order; an exception in one is logged and does not stop the prediction.
``finished`` is called exactly once, by :meth:`PredictionRun.finish`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import replace
from enum import StrEnum
from typing import Any

from httpx_sse import ServerSentEvent

from cogport.core.jobs import Job, JobEvents, OutputFileSink, clean_error
from cogport.core.outcome import Outcome

log = logging.getLogger(__name__)

WORKER_CRASHED = "Worker crashed"
_NOT_RUNNABLE = re.compile(r"exit (?:status|code) 127\b")
"""A program the model ran could not start: the shell's "command not found" or the loader's exit status."""
_WHY_NOT_RUNNABLE = re.compile(r"error while loading shared libraries|(?:command )?not found\s*$")
"""The line saying why (``ffmpeg: error while loading shared libraries: libva.so.2: ...``, ``sh: 1: x: not
found``), which the program wrote to its stderr: in the prediction's logs (:class:`~.logs.LogTail`), not its
error."""


def exits_127(error: str | None) -> bool:
    """Whether ``error`` is about a program that exited 127 (``CalledProcessError``, a shell's status)."""
    return bool(error and _NOT_RUNNABLE.search(error))


def exit_reason(error: str | None, logs: str) -> str | None:
    """For an error about a program that exited 127, the line of ``logs`` saying why (the last one)."""
    if not exits_127(error):
        return None
    reasons = [line.strip() for line in logs.splitlines() if _WHY_NOT_RUNNABLE.search(line)]
    return reasons[-1] if reasons else None


def with_exit_reason(error: str | None, logs: str) -> str | None:
    """``error``, plus the line saying why a program it names exited 127 (when the logs have one)."""
    reason = exit_reason(error, logs)
    return f"{error}\n{reason}" if reason and error and reason not in error else error


def worker_crashed(outcome: Outcome) -> bool:
    """Whether coglet reported that the model's worker process died (the instance says why)."""
    return outcome.status == "failed" and outcome.error == WORKER_CRASHED


class Progress(StrEnum):
    """How far one prediction on an instance has got: ``SENT ──► STARTED ──► FINISHED`` (or ``SENT ──►
    FINISHED`` when it ends before it starts). Each step is reported once; none goes back."""

    SENT = "sent"
    """Sent to coglet, not known to have started."""
    STARTED = "started"
    """coglet has (or may have) it: a cancel is sent to it; ``started`` is reported."""
    FINISHED = "finished"
    """``finished`` is reported (exactly once)."""


class CancelReason(StrEnum):
    """Why a prediction is being canceled, if it is: by its user, or because its instance is stopping (then
    it is reported as a failure, not as canceled). A user's cancel wins over the instance's stop."""

    NONE = "none"
    USER = "user"
    INSTANCE_STOPPING = "instance_stopping"


class PredictionRun:
    """The state of one prediction while its events stream in: its :class:`Progress`, and the
    :class:`CancelReason` of a cancel asked."""

    def __init__(
        self, job: Job, events: JobEvents, *, iterator_output: bool, file_sink: OutputFileSink | None = None
    ) -> None:
        self.job = job
        self.events = events
        self.iterator_output = iterator_output
        self.file_sink = file_sink
        self._kept: dict[int, tuple[tuple[int, int], str]] = {}
        """Output items kept as files: index → ((length, hash) of the ``data:`` URL, the file's URL)."""
        self.progress = Progress.SENT
        self.announced_at: float | None = None
        """When coglet's ``start`` event arrived (monotonic): from then on coglet knows the id."""
        self.model_active = False
        """The model has shown it is running: it printed, yielded or recorded a metric."""
        self.cancel_reason = CancelReason.NONE
        self.cancel_task: asyncio.Task[None] | None = None
        """Sends the cancel to coglet until it surely took effect (see :meth:`CogletApi.cancel`)."""
        self.cancel_sent_at: float | None = None
        """When the cancel to coglet started (monotonic)."""
        self.killed = False
        """The model did not stop within the grace period after the cancel: its instance was killed."""
        self.logs: list[str] = []
        self.chunks: list[Any] = []

    async def handle(self, event: ServerSentEvent) -> Outcome | None:
        """Apply one event; the outcome once ``completed`` arrives."""
        data = event.json()
        if event.event == "start":
            self.announced_at = self.announced_at or time.monotonic()
            await self.mark_started()
        elif event.event == "log" and isinstance(data, dict):
            await self.add_logs(str(data.get("data", "")))
        elif event.event == "metric":
            self.model_active = True
        elif event.event == "output" and isinstance(data, dict):
            self.model_active = True
            self.chunks.append(await self._keep(data.get("chunk"), len(self.chunks)))
            if self.iterator_output:
                await self._call("output", self.events.output(self.job, list(self.chunks)))
        elif event.event == "completed" and isinstance(data, dict):
            return self.outcome_from(data)
        return None

    @property
    def started(self) -> bool:
        """coglet has (or may have) the prediction: from now on a cancel is sent to it."""
        return self.progress is not Progress.SENT

    @property
    def finished(self) -> bool:
        return self.progress is Progress.FINISHED

    @property
    def cancel_requested(self) -> bool:
        """Canceled by the user."""
        return self.cancel_reason is CancelReason.USER

    @cancel_requested.setter
    def cancel_requested(self, asked: bool) -> None:
        if asked:
            self.cancel_reason = CancelReason.USER

    @property
    def instance_stopping(self) -> bool:
        """Canceled by us, not by its user: the instance is stopping (reported as a failure, not as
        canceled). Not the ``aborted`` status, which a ``Cancel-After`` deadline gives."""
        return self.cancel_reason is CancelReason.INSTANCE_STOPPING

    def stop_for_instance(self) -> None:
        """The instance is stopping: the prediction is canceled (unless its user canceled it already)."""
        if self.cancel_reason is CancelReason.NONE:
            self.cancel_reason = CancelReason.INSTANCE_STOPPING

    @property
    def wants_cancel(self) -> bool:
        """Canceled, by the user or because the instance is stopping."""
        return self.cancel_reason is not CancelReason.NONE

    async def add_logs(self, text: str) -> None:
        if text:
            self.model_active = True
            self.logs.append(text)
            await self._call("logs", self.events.logs(self.job, text))

    async def mark_started(self) -> None:
        """The model started: coglet knows the prediction, and ``started`` is reported (once)."""
        if self.progress is Progress.SENT:
            self.progress = Progress.STARTED
            await self._call("started", self.events.started(self.job))

    def outcome_from(self, data: dict[str, Any]) -> Outcome:
        """The outcome a ``completed`` event (or a plain POST's response body) describes."""
        status = data.get("status")
        if status not in ("succeeded", "failed", "canceled"):
            return Outcome("failed", error=f"The model server reported an unexpected status {status!r}")
        error = data.get("error")
        error = clean_error(str(error)) if error is not None else None
        metrics = data.get("metrics") or {}
        return Outcome(
            status=status,
            output=data.get("output", self.chunks if self.iterator_output else None),
            error=error,
            logs=str(data.get("logs") or "") or self.streamed_logs,
            metrics=dict(metrics) if isinstance(metrics, dict) else {},
        )

    @property
    def streamed_logs(self) -> str:
        """Logs as they arrived (coglet's final object has none on failure or cancel)."""
        return "".join(self.logs)

    async def finish(self, outcome: Outcome) -> None:
        if self.progress is Progress.FINISHED:
            return
        self.progress = Progress.FINISHED
        if self.file_sink is not None and isinstance(outcome.output, list):
            # coglet's final list is the list of its output events: those items are kept already.
            kept = [await self._keep(item, index) for index, item in enumerate(outcome.output)]
            outcome = replace(outcome, output=kept)
        if outcome.logs is None:
            outcome = replace(outcome, logs=self.streamed_logs)
        await report(self.job, self.events, outcome)

    async def _call(self, name: str, awaitable: Awaitable[None]) -> None:
        await _call(self.job, name, awaitable)

    async def _keep(self, item: Any, index: int) -> Any:
        """``item``, or the URL of the output file it is kept as when it is a ``data:`` URL and files are
        kept (the same file once, however often the item comes). One that cannot be kept stays inline."""
        if self.file_sink is None or not isinstance(item, str) or not item.startswith("data:"):
            return item
        fingerprint = (len(item), hash(item))
        kept = self._kept.get(index)
        if kept is not None and kept[0] == fingerprint:
            return kept[1]
        try:
            url = await self.file_sink.keep(item, index)
        except Exception:
            log.exception("keeping output file %d of %s failed; it stays inline", index, self.job.prediction_id)
            return item
        self._kept[index] = (fingerprint, url)
        return url


async def report(job: Job, events: JobEvents, outcome: Outcome) -> None:
    """Call ``events.finished`` with ``outcome`` (an exception in it is logged, not raised)."""
    await _call(job, "finished", events.finished(job, outcome))


async def _call(job: Job, name: str, awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("the %s callback for %s failed", name, job.prediction_id)
