"""Measure the local runtime: cold start, and per-prediction overhead of each way to talk to coglet.

Run from the repository root: ``.venv/bin/python bench/runtime_overhead.py [--n 300]``.
Uses the fixture models (tests/fixtures/models) and the shared test venv (built on first use).
Prints a Markdown table; docs/runtime.md quotes its numbers.

``--side-by-side ROUNDS``: the sandbox's cost alone. Interleaved rounds, each with a sandboxed and an
unconfined backend (the unconfined one talks to coglet over loopback TCP, as the sandbox before its own
network namespace did): cold start (spawn → READY) and warm ``submit → finished`` of the ``noop`` model;
medians of the rounds' medians, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.runtime import Events, job, new_id, spec

from cogport.backends.local import LocalBackend
from cogport.runtime.instance import Instance, InstanceOptions
from cogport.runtime.sandbox import Sandbox
from cogport.settings import RuntimeSettings, Settings

Row = tuple[str, str]
SANDBOX: Sandbox | None = Sandbox()
"""The sandbox every instance runs in (``--no-sandbox``: none), as in production."""


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p90 {p(0.9):.2f} ms, p99 {p(0.99):.2f} ms"


async def timed(n: int, once: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(10):  # warm up
        await once()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - began)
    return samples


async def cold_starts(rows: list[Row], runs: int) -> None:
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for model in ("noop", "hello"):
            samples = []
            for n in range(runs):
                instance = Instance(
                    spec(model), InstanceOptions(sandbox=SANDBOX), client=client, name=f"bench-{model}-{n}"
                )
                await instance.start()
                assert instance.ready_after is not None
                samples.append(instance.ready_after)
                await instance.stop()
            rows.append((f"cold start, spawn → READY ({model}, {runs} runs)", summary(samples)))


async def raw_protocols(rows: list[Row], n: int) -> None:
    """coglet itself, without cogport's bookkeeping: plain POST vs SSE, kept-alive vs fresh connections."""
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        instance = Instance(spec("noop"), InstanceOptions(sandbox=SANDBOX), client=client, name="bench-raw")
        await instance.start()
        url = f"{instance.url}/predictions"
        uds = instance.process.uds if instance.process else None  # sandboxed: coglet behind a unix socket
        fresh = httpx.AsyncClient(
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            transport=httpx.AsyncHTTPTransport(uds=uds) if uds else None,
        )
        transport = httpx.AsyncHTTPTransport(uds=uds) if uds else None
        async with fresh, httpx.AsyncClient(trust_env=False, transport=transport) as kept:

            async def plain(client: httpx.AsyncClient) -> None:
                for _ in range(1000):
                    if (await client.post(url, json={"id": new_id(), "input": {}})).status_code != 409:
                        return
                    await asyncio.sleep(0.001)  # the slot-release race: retry

            async def sse(client: httpx.AsyncClient) -> None:
                while True:
                    body = {"id": new_id(), "input": {}}
                    async with client.stream("POST", url, json=body, headers={"Accept": "text/event-stream"}) as r:
                        if r.status_code == 409:
                            await r.aread()
                            await asyncio.sleep(0.001)
                            continue
                        async for _ in r.aiter_lines():
                            pass
                        return

            rows.append(("coglet plain POST, keep-alive connection", summary(await timed(n, lambda: plain(kept)))))
            rows.append(("coglet plain POST, new connection each", summary(await timed(n, lambda: plain(fresh)))))
            rows.append(("coglet SSE, keep-alive connection", summary(await timed(min(n, 60), lambda: sse(kept)))))
            rows.append(("coglet SSE, new connection each", summary(await timed(n, lambda: sse(fresh)))))
        await instance.stop()


async def through_cogport(rows: list[Row], n: int) -> None:
    backend = LocalBackend(Settings(runtime=RuntimeSettings(sandbox=SANDBOX is not None)))
    await backend.start()
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        instance = Instance(spec("noop"), InstanceOptions(sandbox=SANDBOX), client=client, name="bench-instance")
        await instance.start()

        async def on_instance() -> None:
            instance.reserve()
            await instance.predict(job(instance.spec), Events())

        rows.append(("Instance.predict (SSE, events recorded)", summary(await timed(n, on_instance))))
        await instance.stop()

    version = spec("noop", pk=2)

    async def on_backend() -> None:
        events = Events()
        await backend.submit(job(version), events)
        await events.finish()

    rows.append(("LocalBackend submit → finished (warm)", summary(await timed(n, on_backend))))

    many = spec("concurrent", pk=3, concurrency=4)

    async def four_at_once() -> None:
        eventses = [Events() for _ in range(4)]
        for events in eventses:
            await backend.submit(job(many), events)
        for events in eventses:
            await events.finish()

    samples = await timed(max(10, n // 4), four_at_once)
    rows.append(("LocalBackend, 4 at once on an async model (concurrency 4), per batch", summary(samples)))
    await backend.stop()


async def side_by_side(rounds: int, n: int) -> None:
    """The sandbox's cost: interleaved rounds of sandboxed and unconfined backends (see the docstring)."""
    results: dict[tuple[str, bool], list[float]] = {}
    for number in range(rounds):
        for sandboxed in (True, False) if number % 2 == 0 else (False, True):
            backend = LocalBackend(Settings(runtime=RuntimeSettings(sandbox=sandboxed)))
            await backend.start()
            version = spec("noop", pk=10 + number)
            events = Events()
            began = time.perf_counter()
            await backend.submit(job(version), events)
            await events.finish()
            results.setdefault(("cold", sandboxed), []).append(time.perf_counter() - began)

            async def warm() -> None:
                done = Events()
                await backend.submit(job(version), done)  # noqa: B023 - awaited within the iteration
                await done.finish()

            samples = await timed(n, warm)
            results.setdefault(("p50", sandboxed), []).append(statistics.median(samples))
            results.setdefault(("p99", sandboxed), []).append(sorted(samples)[int(0.99 * (len(samples) - 1))])
            await backend.stop()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{rounds} rounds, {n} warm predictions each; load average {load}\n")
    print("| median of rounds | sandboxed | unconfined | difference |\n|---|---:|---:|---:|")
    names = {"cold": "first prediction (cold start + prediction)", "p50": "warm p50", "p99": "warm p99"}
    for key, label in names.items():
        on, off = statistics.median(results[(key, True)]), statistics.median(results[(key, False)])
        print(f"| {label} | {on * 1000:.2f} ms | {off * 1000:.2f} ms | {(on - off) * 1000:+.2f} ms |")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--no-sandbox", action="store_true", help="run the models unconfined")
    parser.add_argument("--side-by-side", type=int, default=0, metavar="ROUNDS", help="sandboxed vs unconfined")
    args = parser.parse_args()
    if args.side_by_side:
        await side_by_side(args.side_by_side, args.n)
        return
    global SANDBOX
    SANDBOX = None if args.no_sandbox else Sandbox()
    rows: list[Row] = []
    await cold_starts(rows, args.cold)
    await raw_protocols(rows, args.n)
    await through_cogport(rows, args.n)
    print("| what | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    asyncio.run(main())
