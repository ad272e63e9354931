"""``python -m bench sse_reader``: reading coglet's SSE, httpx-sse vs the hand-written reader it replaced, A/B.

The runtime reads coglet's ``Accept: text/event-stream`` answer for every streamed prediction. This measures
the reader alone, on the bytes coglet 0.23.1 writes (recorded from the ``iterator`` fixture: a ``start``, then
a ``log`` and an ``output`` per token, then ``completed``; one chunk per event, no ``id:`` lines), fed to an
``httpx.Response`` from memory so that neither the model nor the network is in the figure:

* ``hand-written``: ``response.aiter_lines()`` into the parser ``runtime/sse.py`` had (kept below, as it was);
* ``httpx-sse``: ``httpx_sse.EventSource(response).aiter_sse()``, as ``runtime/coglet_api.py`` now reads.

Rounds alternate the two (A B, then B A, ...); each round reads ``--streams`` streams of ``--tokens`` tokens
per side and notes CPU time (``time.process_time``) per event; prints each round and the medians.
``--only SIDE --streams N`` reads N streams of one side and exits, for an instruction count that load does not
move: ``valgrind --tool=callgrind`` at two stream counts, (Ir(N) - Ir(0)) / (N x events per stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource


@dataclass(frozen=True)
class HandWrittenEvent:
    event: str
    data: str


async def hand_written(lines: AsyncIterable[str]) -> AsyncIterator[HandWrittenEvent]:
    """``runtime/sse.py``'s ``iter_events`` before httpx-sse, verbatim."""
    event = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield HandWrittenEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield HandWrittenEvent(event or "message", "\n".join(data))


def coglet_stream(tokens: int) -> list[bytes]:
    """The chunks coglet writes for a prediction yielding ``tokens`` tokens (one chunk per event)."""
    pid = "rt43a1e743c1694994ad50"

    def chunk(event: str, data: dict[str, Any]) -> bytes:
        return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    chunks = [chunk("start", {"id": pid, "status": "processing"})]
    for i in range(tokens):
        chunks.append(chunk("log", {"data": f"yielding token{i}\n", "source": "stdout"}))
        chunks.append(chunk("output", {"chunk": f"token{i} ", "index": i}))
    logs = "".join(f"yielding token{i}\n" for i in range(tokens))
    output = [f"token{i} " for i in range(tokens)]
    completed = {"id": pid, "logs": logs, "metrics": {"predict_time": 0.0019}, "output": output}
    chunks.append(chunk("completed", {**completed, "status": "succeeded"}))
    return chunks


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def response(chunks: list[bytes]) -> httpx.Response:
    headers = {"content-type": "text/event-stream", "transfer-encoding": "chunked"}
    return httpx.Response(200, headers=headers, stream=_Chunks(chunks))


async def read_hand_written(chunks: list[bytes]) -> int:
    count = 0
    async for event in hand_written(response(chunks).aiter_lines()):
        count += len(event.event) > 0
    return count


async def read_httpx_sse(chunks: list[bytes]) -> int:
    count = 0
    async for event in EventSource(response(chunks)).aiter_sse():
        count += len(event.event) > 0
    return count


SIDES: dict[str, Callable[[list[bytes]], Coroutine[Any, Any, int]]] = {
    "hand-written": read_hand_written,
    "httpx-sse": read_httpx_sse,
}


async def cpu_per_event(read: Callable[[list[bytes]], Coroutine[Any, Any, int]], chunks: list[bytes], n: int) -> float:
    """Microseconds of CPU per event over ``n`` streams."""
    began = time.process_time()
    events = 0
    for _ in range(n):
        events += await read(chunks)
    return (time.process_time() - began) / events * 1e6


async def run(args: argparse.Namespace) -> int:
    chunks = coglet_stream(args.tokens)
    expected = len(chunks)
    for name, read in SIDES.items():  # same events from both, and warm
        got = await read(chunks)
        assert got == expected, f"{name}: {got} events, expected {expected}"
    if args.only:
        for _ in range(args.streams):
            await SIDES[args.only](chunks)
        return 0
    names = list(SIDES)
    figures: dict[str, list[float]] = {name: [] for name in names}
    print(f"{args.rounds} rounds x {args.streams} streams x {expected} events per side; CPU us per event")
    for round_ in range(args.rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            figures[name].append(await cpu_per_event(SIDES[name], chunks, args.streams))
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {figures[name][-1]:.2f}" for name in names))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print("median: " + ", ".join(f"{name} {value:.2f} us/event" for name, value in medians.items()))
    ratio = [b / a for a, b in zip(figures["hand-written"], figures["httpx-sse"], strict=True)]
    print(f"httpx-sse / hand-written, paired rounds: median {statistics.median(ratio):.3f}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sse_reader", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--only", choices=sorted(SIDES))
    return asyncio.run(run(parser.parse_args(argv)))
