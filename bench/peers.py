"""``python -m bench peers``: the same no-op function served by cogport and by its peers, side by side.

* ``coglet``: coglet direct (``python -m cog.server.http`` on the pushed version's own venv and source, as
  cogport starts its instances): the floor for a Cog model; it answers 409 while its one slot is busy;
* ``cogport``: ``cogport serve`` (a subprocess, SQLite in a fresh data dir) with ``Prefer: wait``, and again on
  PostgreSQL (a fresh schema, ``--database-url``; ``--database-url ''`` skips it);
* ``bentoml``: BentoML 1.4, a ``@bentoml.service`` whose ``@bentoml.api`` returns ``""``;
* ``ray``: Ray Serve 2.x, a deployment returning ``""`` (``serve.start`` on a local one-node cluster);
* ``fastapi``: bare FastAPI + uvicorn (httptools), an ``async def`` returning ``""``: the floor for any server.

BentoML, Ray Serve and FastAPI are installed into venvs of their own under ``~/.cache/cogport-bench/peers``
(``uv venv`` + ``uv pip install``; never into cogport's); a peer that cannot be installed is skipped, with why.

Each round starts every system afresh, in turn (A B C D A B C D ...), and for each: the start time (process
launched to the first answered prediction), 100 warm-up requests, idle RSS of the server's process tree, then
``--requests`` sequential requests from one keep-alive client (p50, p99, req/s, and the CPU the server's
process tree spent per request, from ``/proc/<pid>/stat``; for cogport also its server process alone), then
``--clients`` concurrent clients for ``--seconds`` (wrk when installed, else httpx async clients; 2xx successes per
second, the rest (coglet's 409s: its busy slot) counted apart).
The table shows the median over rounds. ``--baseline REF`` adds cogport at ``REF`` (its ``src/`` from a git
worktree) as another row; ``--py-spy FILE`` records cogport's server process (SQLite, first round) during
the sequential run with py-spy (``--gil``, collapsed stacks) into ``FILE``, summed by area.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.predictions import AUTH, CLI, MODELS, cogport_env, free_port, note, pct, push_model
from bench.stores import Store, open_store

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("COGPORT_BENCH_CACHE") or Path.home() / ".cache" / "cogport-bench") / "peers"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
CLOCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WARM_UP = 100
SPY_RATE = int(os.environ.get("COGPORT_BENCH_SPY_RATE") or 500)
"""py-spy's samples per second."""

PEER_PACKAGES = {
    "bentoml": ["bentoml==1.4.*"],
    "ray": ["ray[serve]==2.*"],
    "fastapi": ["fastapi", "uvicorn[standard]"],
}
PEER_IMPORT = {"bentoml": "bentoml", "ray": "ray.serve", "fastapi": "fastapi, uvicorn"}

BENTO_SERVICE = """
import bentoml


@bentoml.service
class Noop:
    @bentoml.api
    def predict(self) -> str:
        return ""
"""

RAY_APP = """
import sys, time
import ray
from ray import serve
from starlette.requests import Request


@serve.deployment
class Noop:
    def __call__(self, request: Request) -> str:
        return ""


# A cluster of its own (never one a test run here has started), its files apart from theirs
ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False, _temp_dir=sys.argv[2])
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(Noop.bind(), route_prefix="/predictions")
while True:
    time.sleep(3600)
"""

FASTAPI_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.post("/predictions")
async def predict() -> str:
    return ""
"""


# --- processes ----------------------------------------------------------------------------------------------


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                tree[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    tree, found, todo = children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def cpu_s(pids: list[int]) -> float:
    """utime + stime of ``pids`` (the processes themselves, not their reaped children), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total / 1e6


@dataclass
class Target:
    """A started system: the process, and how to ask it for one prediction."""

    process: subprocess.Popen[bytes]
    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    server_pid: int = 0
    """The process whose own CPU is reported apart (cogport's server), 0 for none."""
    scratch: str = ""
    """A folder of the system's own, removed once it is stopped."""


@dataclass
class System:
    name: str
    start: Callable[[Path], Target]
    stop: Callable[[Target], None] | None = None


def launch(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True)


def kill(target: Target) -> None:
    pids = process_tree(target.process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(target.process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        target.process.wait(timeout=20)
    for pid in pids:  # whatever left the group (Ray's daemons start sessions of their own)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(target.process.pid, signal.SIGKILL)
    target.process.wait()
    if target.scratch:
        shutil.rmtree(target.scratch, ignore_errors=True)


# --- the systems ----------------------------------------------------------------------------------------------


def peer_python(name: str) -> Path:
    """The python of ``name``'s own venv, installed on first use; raises ``RuntimeError`` with the reason."""
    venv = CACHE / name
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import {PEER_IMPORT[name]}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    note(f"installing {name} into {venv}")
    made = subprocess.run([uv, "venv", "-q", "--allow-existing", "-p", "3.11", str(venv)], capture_output=True)
    installed = made.returncode == 0 and (
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), *PEER_PACKAGES[name]], capture_output=True, text=True
        )
    )
    if not installed or installed.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        error = (installed.stderr if installed else made.stderr.decode()).strip().splitlines()
        raise RuntimeError(f"{name} could not be installed: {error[-1] if error else 'unknown error'}")
    return python


def coglet(source: str, venv: str) -> System:
    def start(work: Path) -> Target:
        port = free_port()
        env = {
            **os.environ,
            "PATH": f"{venv}/bin:{os.environ['PATH']}",
            "PORT": str(port),
            "COG_PREDICT_TYPE_STUB": "predict.py:Runner",
            "COG_LOG_LEVEL": "warning",
        }
        command = [f"{venv}/bin/python", "-m", "cog.server.http", "--host", "127.0.0.1"]
        process = launch(command, Path(source), env, work / "coglet.log")
        return Target(process, f"http://127.0.0.1:{port}/predictions", {"input": {}})

    return System("coglet direct", start, kill)


def cogport(name: str, data: Path, version: str, env: dict[str, str]) -> System:
    def start(work: Path) -> Target:
        port = free_port()
        process = launch([CLI, "serve", "--port", str(port)], REPO, cogport_env(data, env=env), work / f"{name}.log")
        url = f"http://127.0.0.1:{port}/v1/predictions"
        body = {"version": version, "input": {}}
        return Target(process, url, body, {**AUTH, "Prefer": "wait"}, server_pid=process.pid)

    return System(name, start, kill)


def bentoml() -> System:
    python = peer_python("bentoml")

    def start(work: Path) -> Target:
        (work / "bento_service.py").write_text(BENTO_SERVICE)
        port = free_port()
        env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "BENTOML_HOME": str(work / "bentoml-home")}
        command = [str(python.with_name("bentoml")), "serve", "bento_service:Noop", "--port", str(port)]
        command += ["--host", "127.0.0.1"]
        process = launch(command, work, env, work / "bentoml.log")
        return Target(process, f"http://127.0.0.1:{port}/predict", {})

    return System(f"BentoML {version_of(python, 'bentoml')}", start, kill)


def ray() -> System:
    python = peer_python("ray")

    def start(work: Path) -> Target:
        (work / "ray_app.py").write_text(RAY_APP)
        port = free_port()
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
        temp = tempfile.mkdtemp(prefix="rayb-")  # short: Ray's socket paths must fit in 107 bytes
        process = launch([str(python), "ray_app.py", str(port), temp], work, env, work / "ray.log")
        return Target(process, f"http://127.0.0.1:{port}/predictions", {}, scratch=temp)

    return System(f"Ray Serve {version_of(python, 'ray')}", start, kill)


def fastapi() -> System:
    python = peer_python("fastapi")

    def start(work: Path) -> Target:
        (work / "fastapi_app.py").write_text(FASTAPI_APP)
        port = free_port()
        command = [str(python), "-m", "uvicorn", "fastapi_app:app", "--port", str(port), "--log-level", "warning"]
        command += ["--no-access-log", "--http", "httptools"]
        process = launch(command, work, dict(os.environ), work / "fastapi.log")
        return Target(process, f"http://127.0.0.1:{port}/predictions", {})

    return System("bare FastAPI + uvicorn", start, kill)


def version_of(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


# --- measuring --------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    start_s: float
    rss_mb: float
    p50: float
    p99: float
    rps_1: float
    rps_n: float
    busy_n: float
    """409s per second with ``--clients`` clients (coglet's busy slot)."""
    cpu_tree_ms: float
    cpu_server_ms: float | None


def answered(response: httpx.Response) -> bool:
    if response.status_code // 100 != 2:
        return False
    if not response.headers.get("content-type", "").startswith("application/json"):
        return True  # BentoML and Ray Serve answer "" as text/plain
    body = response.json()
    return not isinstance(body, dict) or body.get("status", "succeeded") == "succeeded"


def first_answer(client: httpx.Client, target: Target, began: float, limit_s: float = 180) -> float:
    while time.monotonic() - began < limit_s:
        if target.process.poll() is not None:
            raise RuntimeError(f"the server exited ({target.process.returncode}) before answering")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if answered(client.post(target.url, json=target.body, headers=target.headers, timeout=30)):
                return time.monotonic() - began
        time.sleep(0.02)
    raise RuntimeError(f"no answer in {limit_s:.0f} s")


def sequential(client: httpx.Client, target: Target, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        began = time.perf_counter()
        while (response := client.post(target.url, json=target.body, headers=target.headers)).status_code == 409:
            pass  # coglet's slot-release race: retried at once, as a caller must
        latencies.append((time.perf_counter() - began) * 1000)
        if not answered(response):
            raise RuntimeError(f"unexpected answer: {response.status_code} {response.text[:200]}")
    return latencies


async def concurrent(target: Target, clients: int, seconds: float) -> tuple[int, int, int]:
    """Successes (2xx), 409s and other answers from ``clients`` keep-alive clients over ``seconds``."""
    counts = collections.Counter[str]()
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            try:
                response = await client.post(target.url, json=target.body, headers=target.headers)
            except httpx.HTTPError:
                counts["error"] += 1
                continue
            status = response.status_code
            counts["ok" if status // 100 == 2 else "busy" if status == 409 else "error"] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return counts["ok"], counts["busy"], counts["error"]


def wrk(target: Target, clients: int, seconds: float) -> tuple[int, int, int]:
    """As :func:`concurrent`, with ``wrk`` (one thread, ``clients`` keep-alive connections): a C client costs
    the box far less CPU per request than httpx, so its figure is the server's rather than the pair's."""
    lines = ["wrk.method = 'POST'", f"wrk.body = '{json.dumps(target.body)}'"]
    lines += [f"wrk.headers['{k}'] = '{v}'" for k, v in {"Content-Type": "application/json", **target.headers}.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "-s", script.name, target.url]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    total = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
    failed = next((int(line.split(":")[1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    errors = next((line for line in out.splitlines() if "Socket errors" in line), "")
    if errors:
        note(f"wrk: {errors.strip()}")
    return total - failed, failed, 0


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "-p", str(pid), "--gil", "--nonblocking", "-r", str(SPY_RATE), "-f", "raw"]
    command += ["-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def measure(system: System, work: Path, args: argparse.Namespace, spy: Path | None) -> Figures:
    began = time.monotonic()
    target = system.start(work)
    try:
        with httpx.Client(timeout=120) as client:
            start_s = first_answer(client, target, began)
            sequential(client, target, WARM_UP)
            time.sleep(0.5)
            tree = process_tree(target.process.pid)
            rss = rss_mb(tree)
            cpu_before = cpu_s(tree)
            server_before = cpu_s([target.server_pid]) if target.server_pid else 0.0
            with py_spy(target.server_pid, spy if target.server_pid else None):
                seq_began = time.perf_counter()
                latencies = sequential(client, target, args.requests)
                seq_s = time.perf_counter() - seq_began
            tree = process_tree(target.process.pid)
            cpu_tree = (cpu_s(tree) - cpu_before) / args.requests * 1000
            cpu_server = (cpu_s([target.server_pid]) - server_before) / args.requests * 1000
        if args.client == "wrk":
            ok, busy, errors = wrk(target, args.clients, args.seconds)
        else:
            ok, busy, errors = asyncio.run(concurrent(target, args.clients, args.seconds))
        if errors:
            note(f"{system.name}: {errors} errors from {args.clients} clients")
        return Figures(
            start_s,
            rss,
            pct(latencies, 0.5),
            pct(latencies, 0.99),
            args.requests / seq_s,
            ok / args.seconds,
            busy / args.seconds,
            cpu_tree,
            cpu_server if target.server_pid else None,
        )
    finally:
        (system.stop or kill)(target)


# --- setting up cogport ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def cogport_systems(
    args: argparse.Namespace, work: Path, stack: contextlib.ExitStack
) -> Iterator[tuple[list[System], str, str]]:
    """cogport's rows (SQLite, PostgreSQL, the baseline), each store with the noop model pushed; and coglet's
    ``(source, venv)`` from the SQLite one."""
    from bench.predictions import cogport_server

    rows: list[tuple[str, str, Path, dict[str, str]]] = [("cogport (SQLite)", "", work / "sqlite" / "data", {})]
    if args.database_url:
        rows.append(("cogport (PostgreSQL)", args.database_url, work / "pg" / "data", {}))
    if args.baseline:
        tree = stack.enter_context(worktree(args.baseline))
        rows.append(
            (f"cogport {args.baseline} (SQLite)", "", work / "baseline" / "data", {"PYTHONPATH": f"{tree}/src"})
        )
    systems: list[System] = []
    paths = ("", "")
    for name, database_url, data, extra in rows:
        store: Store = stack.enter_context(open_store(database_url, data))
        env = {**store.server_env, **extra}
        note(f"{name}: pushing the noop model")
        with cogport_server(data, env=env) as url:
            version = push_model(url, MODELS["noop"], data.parent)
        if not paths[0]:
            paths = store.version_paths(version)
        systems.append(cogport(name, data, version, env))
    yield systems, *paths


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=REPO, check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False, capture_output=True)


# --- the report -----------------------------------------------------------------------------------------------


def load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(results: dict[str, list[Figures]], args: argparse.Namespace) -> list[str]:
    c = args.clients
    lines = [
        f"| system | p50 ms | p99 ms | req/s 1 client | req/s {c} clients (successes) | idle RSS | start | "
        "CPU ms/prediction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rounds in results.items():
        if not rounds:
            continue

        def m(attribute: str, rounds: list[Figures] = rounds) -> float:
            return median([getattr(r, attribute) for r in rounds])

        busy = f" (+{m('busy_n'):,.0f} {'non-2xx' if args.client == 'wrk' else '409s'}/s)" if m("busy_n") else ""
        cpu = f"{m('cpu_tree_ms'):.2f}"
        if rounds[0].cpu_server_ms is not None:
            cpu = f"{m('cpu_server_ms'):.2f} server, {cpu} all"
        lines.append(
            f"| {name} | {m('p50'):.2f} | {m('p99'):.2f} | {m('rps_1'):,.0f} | {m('rps_n'):,.0f}{busy} | "
            f"{m('rss_mb'):,.0f} MB | {m('start_s'):.1f} s | {cpu} |"
        )
    return lines


def profile(path: Path, requests: int, rate: int = SPY_RATE) -> list[str]:
    """py-spy's collapsed stacks summed by area (the innermost frame's: self time) and the functions with the
    most self and cumulative time (a frame counted once per stack; the frames under every request, the
    server's own loop and the threads' bootstrap, left out), in microseconds per prediction."""
    own: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[area(frames[-1])] += count
        functions[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count

    def us(samples: int) -> str:
        return f"{samples / rate / requests * 1e6:,.0f}"

    lines = [
        f"py-spy `--gil` at {rate} Hz over {requests} sequential predictions: {total} samples = "
        f"{us(total)} µs per prediction holding the GIL in cogport's server process",
        "",
        "| area (innermost Python frame) | self µs/prediction | share |",
        "|---|---:|---:|",
    ]
    for name, samples in own.most_common():
        lines.append(f"| {name} | {us(samples)} | {samples / total * 100:.0f} % |")
    lines += ["", "top functions, self µs/prediction:", ""]
    lines += [f"- {us(samples)}: `{frame}`" for frame, samples in functions.most_common(20)]
    lines += ["", "top functions, cumulative µs/prediction:", ""]
    common = [(frame, samples) for frame, samples in cumulative.most_common() if not root(frame)]
    lines += [f"- {us(samples)}: `{frame}`" for frame, samples in common[:30]]
    return lines


AREAS = [  # the first whose needle is in the frame (``function (file:line)``) names it
    ("uvicorn/httptools (HTTP parsing, protocol, socket writes)", ("uvicorn/", "h11/", "httptools")),
    ("cogport: auth, rate limits", ("cogport/api/deps", "principal_cache", "rate_limits", "cogport/auth")),
    ("cogport: middleware (access log, body limits, problems)", ("api/access", "body_limits", "api/problems")),
    ("starlette/fastapi (middleware stack, routing, responses)", ("starlette/", "fastapi/")),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("SQLAlchemy / sqlite3 / asyncpg (ORM, SQL)", ("sqlalchemy/", "sqlite3", "asyncpg/", "aiosqlite")),
    ("httpx/httpcore", ("httpx/", "httpcore/", "anyio/", "h2/")),
    ("json", ("json/", "orjson", "ujson")),
    ("logging", ("logging/", "cogport/logs", "cogport/observability")),
    ("thread hop (executor, futures)", ("threading.py", "concurrent/futures", "asyncio/futures")),
    ("asyncio event loop, tasks", ("asyncio/", "uvloop", "selectors")),
    ("cogport: API routes, presenters", ("cogport/api/",)),
    ("cogport: lifecycle (runs, dispatcher, recorder, status)", ("cogport/lifecycle/",)),
    ("cogport: coglet client (runtime/http1, instance)", ("cogport/runtime/", "cogport/backends/")),
    ("cogport: db (writer, models)", ("cogport/db/",)),
    ("cogport: other", ("cogport/",)),
]


ROOTS = (
    "typer/",
    "cogport/cli/",
    "<module>",
    "uvicorn/server.py",
    "uvicorn/main.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "threading.py",
    "concurrent/futures/thread.py:8",  # _worker
)


def root(frame: str) -> bool:
    return any(needle in frame for needle in ROOTS)


def area(frame: str) -> str:
    for name, needles in AREAS:
        if any(needle in frame for needle in needles):
            return name
    return "other (stdlib, C)"


# --- main -----------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per system and round")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the concurrent clients run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--client",
        choices=("wrk", "httpx"),
        default="wrk" if shutil.which("wrk") else "httpx",
        help="the concurrent clients: wrk (when installed; the default then) or httpx async clients",
    )
    parser.add_argument("--peers", default="coglet,cogport,bentoml,ray,fastapi")
    parser.add_argument("--database-url", default=DEFAULT_PG, help="cogport's PostgreSQL row ('' to skip)")
    parser.add_argument("--baseline", help="also cogport at this git ref (its src/ from a worktree)")
    parser.add_argument("--py-spy", type=Path, help="record cogport's server process (first round) into this file")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = set(wanted) - {"coglet", "cogport", "bentoml", "ray", "fastapi"}
    if unknown:
        parser.error(f"--peers: unknown {', '.join(sorted(unknown))}")
    if "cogport" not in wanted:  # the SQLite one still serves coglet its pushed model
        args.database_url, args.baseline = "", None

    load_start = load()
    print(f"load average (1 / 5 / 15 min) at start: {load_start}", flush=True)
    skipped: list[str] = []
    results: dict[str, list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="cogport-peers-") as tmp, contextlib.ExitStack() as stack:
        work = Path(os.environ.get("COGPORT_BENCH_DIR") or tmp)
        systems: list[System] = []
        ours, source, venv = stack.enter_context(cogport_systems(args, work, stack))
        for name in wanted:
            try:
                if name == "coglet":
                    systems.append(coglet(source, venv))
                elif name == "cogport":
                    systems.extend(ours)
                else:
                    systems.append({"bentoml": bentoml, "ray": ray, "fastapi": fastapi}[name]())
            except RuntimeError as exc:
                skipped.append(f"{name}: {exc}")
                note(f"skipped {name}: {exc}")
        for round_ in range(args.rounds):
            for system in systems:
                note(f"round {round_ + 1}/{args.rounds}: {system.name}")
                spy = args.py_spy if round_ == 0 and system is ours[0] else None
                run_dir = work / "runs" / f"{round_}-{len(results.get(system.name, []))}"
                run_dir.mkdir(parents=True, exist_ok=True)
                try:
                    figures = measure(system, run_dir, args, spy)
                    results.setdefault(system.name, []).append(figures)
                    note(f"{system.name}: {figures} (load {load()})")
                except RuntimeError as exc:
                    note(f"{system.name} failed this round: {exc}")
                    results.setdefault(system.name, [])
    load_end = load()

    command = shlex.join(["python", "-m", "bench", "peers", *argv])
    print(f"\n`{command}`\n")
    print(
        f"{os.cpu_count()} cores, load average (1 / 5 / 15 min) {load_start} at start, {load_end} at end; "
        f"{platform.python_implementation()} {platform.python_version()}; {args.rounds} rounds, medians; "
        f"{WARM_UP} warm-up then {args.requests} sequential requests from one keep-alive httpx client, then "
        f"{args.clients} {'wrk connections' if args.client == 'wrk' else 'httpx clients'} for {args.seconds:g} s\n"
    )
    print("\n".join(table(results, args)))
    for line in skipped:
        print(f"\nskipped {line}")
    if args.py_spy and args.py_spy.exists():
        print("\n" + "\n".join(profile(args.py_spy, args.requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
