"""``PredictionRun`` with a file sink: each ``data:`` output item is kept once, in the model's order, and the
final output names the same files as the streamed events (coglet's final list is its list of output events)."""

from __future__ import annotations

import json
from typing import Any

from httpx_sse import ServerSentEvent

from cogport.core.jobs import Job, VersionSpec
from cogport.core.outcome import Outcome
from cogport.runtime.prediction import PredictionRun

JOB = Job("p1", VersionSpec(1, "v1", "predict", "/src", "/venv", "predict.py:Runner"), {})


class Sink:
    def __init__(self, *, fail_on: int | None = None) -> None:
        self.kept: list[tuple[str, int]] = []
        self.fail_on = fail_on

    async def keep(self, data_url: str, index: int) -> str:
        if index == self.fail_on:
            raise OSError("disk full")
        self.kept.append((data_url, index))
        return f"https://files/{index}"


class Events:
    def __init__(self) -> None:
        self.outputs: list[Any] = []
        self.final: Any = None

    async def started(self, job: Job) -> None: ...

    async def logs(self, job: Job, text: str) -> None: ...

    async def output(self, job: Job, output: Any) -> None:
        self.outputs.append(output)

    async def finished(self, job: Job, outcome: Outcome) -> None:
        self.final = outcome.output


async def run(sink: Sink, items: list[Any]) -> Events:
    events = Events()
    prediction = PredictionRun(JOB, events, iterator_output=True, file_sink=sink)
    for index, item in enumerate(items):
        await prediction.handle(ServerSentEvent("output", json.dumps({"chunk": item, "index": index})))
    completed = json.dumps({"status": "succeeded", "output": items})
    outcome = await prediction.handle(ServerSentEvent("completed", completed))
    assert isinstance(outcome, Outcome)
    await prediction.finish(outcome)
    return events


async def test_each_inline_file_is_kept_once_in_order() -> None:
    sink = Sink()
    events = await run(sink, ["data:text/plain;base64,MA==", "not a file", "data:text/plain;base64,MQ=="])
    assert sink.kept == [("data:text/plain;base64,MA==", 0), ("data:text/plain;base64,MQ==", 2)]
    assert events.outputs[-1] == events.final == ["https://files/0", "not a file", "https://files/2"]


async def test_a_file_that_cannot_be_kept_stays_inline() -> None:
    events = await run(Sink(fail_on=1), ["data:,a", "data:,b"])
    assert events.final == ["https://files/0", "data:,b"]
