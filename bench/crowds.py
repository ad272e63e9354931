"""``python -m bench crowds``: does a crowd of open SSE streams slow the API down? (issue 19, finding 6)

One real ``cogport serve`` (SQLite, a fresh data dir) per side, with two models pushed: ``quiet``
(``bench/models/quiet``: yields a token, then is silent for an hour) and ``noop``. Four ``quiet``
predictions are made (one runs, three wait behind it: a stream of a queued run is followed differently
from one of a running run). Then, for each of ``idle`` (no streams) and ``crowd`` (``--streams`` open SSE
streams, round-robin over the four, read by plain asyncio sockets so that the client stays light):

* ``GET /v1/predictions/{id}`` of the running one, from ``--clients`` clients at once;
* ``POST /v1/predictions`` with ``Prefer: wait`` of ``noop`` (a sync create), from as many;
* the server's CPU (user + system, from ``/proc``) over a quiet ``--quiet`` seconds with the crowd open.

Every answer that is not a 200/201 (or no answer) counts as an error; a stream that ends before the
bench closes it counts as cut. ``--baseline REF`` runs the same against the code at ``REF`` (a git
worktree; the server imports its ``src``) before the current code, for a side-by-side table. The bench
raises its own ``RLIMIT_NOFILE`` (the servers it starts inherit it). Target: p99 with the crowd within
2x of idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.predictions import AUTH, MODELS, REPO, BenchModel, cogport_server, note, pct, push_model

SLOW = BenchModel("quiet", REPO / "bench" / "models" / "quiet", {"seconds": 3600})
RUNS = 4
TARGET = 2.0


@dataclass
class Phase:
    get_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float = 0.0
    quiet_s: float = 0.0
    opened: int = 0
    cut: int = 0
    open_s: float = 0.0


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def server_pid(url: str) -> int:
    """The ``cogport serve`` listening on ``url``'s port (started by :func:`cogport_server`)."""
    port = str(urlsplit(url).port).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if b"serve" in cmdline and port in cmdline:
                    return int(proc.name)
    raise RuntimeError(f"no server process found for {url}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Crowd:
    """``n`` open SSE streams over raw sockets: each sends its GET, checks the 200 and keeps reading."""

    def __init__(self, url: str, stream_paths: list[str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.paths = stream_paths
        self.tasks: list[asyncio.Task[None]] = []
        self.opened = 0
        self.cut = 0
        self.refused = 0
        self.closing = False

    async def _one(self, path: str, connecting: asyncio.Semaphore, answered: asyncio.Future[None]) -> None:
        writer = None
        try:
            async with connecting:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n\r\n"
                writer.write(request.encode())
                status = await reader.readline()
            if b" 200 " not in status:
                self.refused += 1
                return
            self.opened += 1
            answered.set_result(None)
            while await reader.read(65536):
                pass
            if not self.closing:
                self.cut += 1
        except OSError:
            if not self.closing:
                self.cut += 1
        finally:
            if not answered.done():
                answered.set_result(None)
            if writer is not None:
                writer.close()

    async def open(self, n: int, concurrency: int = 200) -> None:
        """Open ``n`` streams, at most ``concurrency`` connecting at a time; returns once all answered."""
        connecting = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in range(n)]
        for i, answered in enumerate(answers):
            path = self.paths[i % len(self.paths)]
            self.tasks.append(asyncio.create_task(self._one(path, connecting, answered)))
        await asyncio.gather(*answers)

    async def close(self) -> None:
        self.closing = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def hammer(url: str, ids: list[str], noop: str, phase: Phase, args: argparse.Namespace) -> None:
    """GETs of the running prediction, then sync creates of ``noop``, from ``args.clients`` clients each."""
    running = ids[0]

    async def worker(client: httpx.AsyncClient, n: int, call: Any, into: list[float], ok: int) -> None:
        for _ in range(n):
            began = time.perf_counter()
            try:
                response = await call(client)
                if response.status_code != ok:
                    phase.errors += 1
                    continue
            except httpx.HTTPError:
                phase.errors += 1
                continue
            into.append((time.perf_counter() - began) * 1000)

    def get(client: httpx.AsyncClient) -> Any:
        return client.get(f"/v1/predictions/{running}")

    def create(client: httpx.AsyncClient) -> Any:
        body = {"version": noop, "input": {}}
        return client.post("/v1/predictions", json=body, headers={"Prefer": "wait"})

    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=limits, timeout=120) as client:
        per = args.requests // args.clients
        await asyncio.gather(*(worker(client, per, get, phase.get_ms, 200) for _ in range(args.clients)))
        await asyncio.gather(*(worker(client, per, create, phase.create_ms, 201) for _ in range(args.clients)))


async def measure(url: str, pid: int, ids: list[str], noop: str, args: argparse.Namespace) -> dict[str, Phase]:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as client:
        paths = [urlsplit((await client.get(f"/v1/predictions/{i}")).json()["urls"]["stream"]).path for i in ids]
    phases = {"idle": Phase(), "crowd": Phase()}
    note("idle: measuring")
    await hammer(url, ids, noop, phases["idle"], args)
    crowd = Crowd(url, paths)
    phase = phases["crowd"]
    note(f"crowd: opening {args.streams} streams")
    began = time.perf_counter()
    await crowd.open(args.streams)
    phase.open_s = time.perf_counter() - began
    try:
        note(f"crowd: {crowd.opened} open ({crowd.refused} refused); quiet for {args.quiet:.0f} s")
        cpu, began = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(args.quiet)
        phase.cpu_s, phase.quiet_s = cpu_seconds(pid) - cpu, time.perf_counter() - began
        note("crowd: measuring")
        await hammer(url, ids, noop, phase, args)
        await asyncio.sleep(1)
    finally:
        phase.opened, phase.cut = crowd.opened, crowd.cut + crowd.refused
        await crowd.close()
    return phases


def side(name: str, work: Path, args: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Phase]:
    note(f"{name}: starting a server")
    with cogport_server(work / name / "data", env=env) as url:
        slow = push_model(url, SLOW, work / name)
        noop = push_model(url, MODELS["noop"], work / name)
        ids = []
        for _ in range(RUNS):
            created = httpx.post(f"{url}/v1/predictions", json={"version": slow, "input": SLOW.input}, headers=AUTH)
            created.raise_for_status()
            ids.append(created.json()["id"])
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/v1/predictions/{ids[0]}", headers=AUTH).json()["output"] != ["first "]:
            if time.monotonic() > deadline:
                raise RuntimeError("the quiet prediction did not start")
            time.sleep(0.2)
        httpx.post(f"{url}/v1/predictions", json={"version": noop, "input": {}}, headers={**AUTH, "Prefer": "wait"})
        return asyncio.run(measure(url, server_pid(url), ids, noop, args))


@contextlib.contextmanager
def worktree(ref: str, work: Path) -> Any:
    path = work / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)


def row(name: str, phases: dict[str, Phase]) -> list[str]:
    idle, crowd = phases["idle"], phases["crowd"]
    lines = []
    for label, phase in (("idle", idle), (f"{crowd.opened} streams", crowd)):
        cpu = f"{100 * phase.cpu_s / phase.quiet_s:.0f} %" if phase.quiet_s else "-"
        lines.append(
            f"| {name} | {label} | {pct(phase.get_ms, 0.5):.1f} | {pct(phase.get_ms, 0.99):.1f} | "
            f"{pct(phase.create_ms, 0.5):.1f} | {pct(phase.create_ms, 0.99):.1f} | {phase.errors} | "
            f"{phase.cut if phase is crowd else '-'} | {cpu} |"
        )
    return lines


def verdict(phases: dict[str, Phase]) -> tuple[float, float]:
    idle, crowd = phases["idle"], phases["crowd"]
    return (
        pct(crowd.get_ms, 0.99) / pct(idle.get_ms, 0.99),
        pct(crowd.create_ms, 0.99) / pct(idle.create_ms, 0.99),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench crowds")
    parser.add_argument("--streams", type=int, default=2000, help="open SSE streams in the crowd phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    parser.add_argument("--requests", type=int, default=400, help="GETs, then sync creates, per phase")
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds the crowd is left quiet (server CPU)")
    parser.add_argument("--baseline", help="a git ref to run first, side by side (e.g. the commit before a change)")
    args = parser.parse_args(argv)
    raise_fd_limit(2 * args.streams + 4096)

    results: dict[str, dict[str, Phase]] = {}
    with tempfile.TemporaryDirectory(prefix="cogport-bench-") as tmp:
        work = Path(os.environ.get("COGPORT_BENCH_DIR") or tmp)
        if args.baseline:
            with worktree(args.baseline, work) as path:
                env = {"PYTHONPATH": str(path / "src")}
                results[f"baseline {args.baseline}"] = side("baseline", work, args, env)
        results["current"] = side("current", work, args)

    print(
        f"\nthe API with a crowd of quiet SSE streams open (ms; {args.requests} GETs of a running prediction, then "
        f"{args.requests} sync creates of noop, {args.clients} clients; server CPU over {args.quiet:.0f} s quiet)\n"
    )
    print("| code | streams | GET p50 | GET p99 | sync create p50 | sync create p99 | errors | cut | server CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, phases in results.items():
        print("\n".join(row(name, phases)))
    ok = True
    for name, phases in results.items():
        get_x, create_x = verdict(phases)
        errors = phases["idle"].errors + phases["crowd"].errors + phases["crowd"].cut
        good = get_x <= TARGET and create_x <= TARGET and errors == 0
        print(f"\n{name}: p99 with the crowd / idle: GET {get_x:.2f}x, create {create_x:.2f}x; errors + cut {errors}")
        if name == "current":
            ok = good
    print(f"\ncurrent code {'meets' if ok else 'MISSES'} the target: p99 within {TARGET:.0f}x of idle, nothing dropped")
    return 0 if ok else 1
