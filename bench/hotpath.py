"""``python -m bench hotpath``: where the milliseconds of one sync prediction go, step by step.

Runs cogport in this process (uvicorn on a free loopback port, SQLite in a fresh data dir, or PostgreSQL
with ``--database-url``), pushes a benchmark model with the real ``cogport push``, then times sync
``Prefer: wait`` predictions from a client thread while the hot path's steps are wrapped with timestamps
(a profile, not a mock: the steps run as they always do, a wrapper notes when each one begins and ends).
Prints, for each step, the median offset from the moment the client sent the request, in milliseconds.

Wrapping costs a few microseconds a step; compare the client's own p50 with ``python -m bench predictions``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import contextvars
import functools
import inspect
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.predictions import AUTH, MODELS, TOKEN, push_model

Marks = dict[str, dict[str, float]]
"""A step's mark (``create>``, ``tx<``, ...) -> prediction id -> when it happened."""
STEPS = [
    ("client sends", "client>"),
    ("route: Runs.create begins", "create>"),
    ("dispatcher.start_claimed (job handed over)", "start_claimed<"),
    ("coglet call begins (Instance.predict)", "predict>"),
    ("recorder.finished (coglet answered)", "finished>"),
    ("writer: end transaction begins", "tx>"),
    ("writer: end transaction committed", "tx<"),
    ("Runs.create returns (waiter woken)", "create<"),
    ("client has the response", "client<"),
]
ENDING: contextvars.ContextVar[str | None] = contextvars.ContextVar("ENDING", default=None)
"""The prediction whose end ``Recorder.finished`` is recording (so its writes can be told from others')."""


def wrap(marks: Marks, owner: Any, attribute: str, name: str, key: Callable[[tuple[Any, ...], Any], str]) -> None:
    """Note when each call of ``owner.attribute`` begins and ends, under the prediction ``key(args, result)``
    names (the first mark of a step for an id is kept, and the last end); a call with no id is not noted.
    Marks go by prediction, so a write of another run (or a background one) never lands in a request's row."""
    function = getattr(owner, attribute)

    def note(began: float, args: tuple[Any, ...], result: Any) -> None:
        ended = time.perf_counter()
        with contextlib.suppress(Exception):
            prediction = key(args, result)
            if prediction:
                marks[name + ">"].setdefault(prediction, began)
                marks[name + "<"][prediction] = ended

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            began, result = time.perf_counter(), None
            try:
                result = await function(*args, **kwargs)
                return result
            finally:
                note(began, args, result)

        setattr(owner, attribute, timed_async)
    else:

        @functools.wraps(function)
        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            began, result = time.perf_counter(), None
            try:
                result = function(*args, **kwargs)
                return result
            finally:
                note(began, args, result)

        setattr(owner, attribute, timed_sync)


def instrument(marks: Marks) -> None:
    from cogport.db.writer import GroupWriter
    from cogport.lifecycle.dispatcher import Dispatcher
    from cogport.lifecycle.recorder import Recorder
    from cogport.lifecycle.runs import Runs
    from cogport.runtime.instance import Instance

    wrap(marks, Runs, "create", "create", lambda args, created: created.row.id)
    wrap(marks, Dispatcher, "start_claimed", "start_claimed", lambda args, _: args[1].id)
    wrap(marks, Instance, "predict", "predict", lambda args, _: args[1].prediction_id)

    # The end's write: queued (GroupWriter.submit) from inside Recorder.finished, run in a batch by the
    # writer's own task; the queued operation carries the prediction id from one to the other.
    finished = Recorder.finished

    @functools.wraps(finished)
    async def ending(self: Any, job: Any, *args: Any, **kwargs: Any) -> Any:
        marks["finished>"].setdefault(job.prediction_id, time.perf_counter())
        token = ENDING.set(job.prediction_id)
        try:
            return await finished(self, job, *args, **kwargs)
        finally:
            ENDING.reset(token)

    Recorder.finished = ending  # type: ignore[method-assign]
    ends: dict[int, str] = {}
    submit = GroupWriter.submit

    @functools.wraps(submit)
    def tagged(self: Any, operation: Any) -> Any:
        prediction = ENDING.get()
        if prediction is not None:
            ends[id(operation)] = prediction
        return submit(self, operation)

    GroupWriter.submit = tagged  # type: ignore[method-assign]

    transaction = GroupWriter._transaction

    @functools.wraps(transaction)
    async def timed_transaction(self: Any, batch: list[Any]) -> Any:
        began = time.perf_counter()
        try:
            return await transaction(self, batch)
        finally:
            ended = time.perf_counter()
            for item in batch:
                prediction = ends.pop(id(item.operation), None)
                if prediction is not None:
                    marks["tx>"].setdefault(prediction, began)
                    marks["tx<"][prediction] = ended

    GroupWriter._transaction = timed_transaction  # type: ignore[method-assign]


async def serve_and_measure(args: argparse.Namespace, work: Path) -> list[str]:
    os.environ.update(
        COGPORT_DATA_DIR=str(work / "data"),
        COGPORT_ADMIN_TOKEN=TOKEN,
        COGPORT_REGISTER_EXAMPLES="false",
        COGPORT_DETECT_GPUS="false",
        COGPORT_LOG_LEVEL="warning",
        COGPORT_BUILD__UV_CACHE_DIR=str(Path(tempfile.gettempdir()) / "cogport-test-uv-cache-v1"),
    )
    if args.database_url:
        os.environ["COGPORT_DATABASE_URL"] = args.database_url
        os.environ["COGPORT_DATABASE_SCHEMA"] = f"hotpath_{os.getpid()}"
    from cogport.app import create_app
    from cogport.settings import Settings

    marks: Marks = collections.defaultdict(dict)
    instrument(marks)
    app = create_app(Settings(port=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    model = MODELS[args.model]
    version = await asyncio.to_thread(push_model, url, model, work)
    body = {"version": version, "input": model.input}

    def run(n: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=60, headers={**AUTH, "Prefer": "wait"}) as client:
            for _ in range(n):
                began = time.perf_counter()
                response = client.post(f"{url}/v1/predictions", json=body)
                ended = time.perf_counter()
                latencies.append((ended - began) * 1000)
                answer = response.json()
                if answer.get("status") != "succeeded":
                    raise RuntimeError(f"unexpected response: {response.text}")
                marks["client>"][answer["id"]] = began
                marks["client<"][answer["id"]] = ended
        return latencies

    await asyncio.to_thread(run, max(20, args.n // 10))
    marks.clear()
    latencies = sorted(await asyncio.to_thread(run, args.n))
    server.should_exit = True
    await serving
    return report(marks, latencies, args)


def report(marks: Marks, latencies: list[float], args: argparse.Namespace) -> list[str]:
    sent = marks["client>"]
    n = len(sent)
    lines = [
        f"`python -m bench hotpath --model {args.model} --n {args.n}`"
        f"{' on PostgreSQL' if args.database_url else ' on SQLite'}; load average {os.getloadavg()[0]:.2f}",
        "",
        f"client p50 {statistics.median(latencies):.2f} ms, p90 {latencies[int(n * 0.9)]:.2f} ms",
        "",
        "| step | median ms after the client sent |",
        "|---|---:|",
    ]
    for label, key in STEPS:
        times = marks.get(key, {})
        seen = [times[prediction] - began for prediction, began in sent.items() if prediction in times]
        if len(seen) != n:
            lines.append(f"| {label} | ({len(seen)} of {n} seen) |")
            continue
        offset = statistics.median(seen) * 1000
        lines.append(f"| {label} | {offset:.2f} |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hotpath")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--model", choices=sorted(MODELS), default="noop")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cogport-hotpath-") as tmp:
        lines = asyncio.run(serve_and_measure(args, Path(tmp)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
