"""``python -m bench predictions``: the prediction path, side by side with coglet itself, for two models.

One real ``cogport serve`` (SQLite in a fresh data dir, or PostgreSQL in a fresh schema with
``--database-url``) with both benchmark models pushed into it:

* ``noop``: the no-op fixture (``tests/fixtures/models/noop``), no inputs, returns ``""``;
* ``realistic``: ``bench/models/realistic``, five typed inputs (all set), one log line, a short string.

For each model, a coglet server started from the same version's virtualenv and source (the runtime cogport
supervises), and the same client (httpx, one keep-alive connection), run:

* ``direct``: sync ``POST /predictions`` against coglet (and again from ``--concurrency`` clients);
* ``cogport``: sync ``POST /v1/predictions`` with ``Prefer: wait`` against cogport;
* ``creates``: async creates (no wait) from ``--concurrency`` clients into the queue;
* ``burst``: N async predictions created at once, then watched (from the database) until all are terminal:
  all must succeed. Its drain rate is compared with coglet's own throughput for the model.

Targets: added latency p50 <= 1.5 ms and p99 <= 5 ms, throughput >= 50 % of direct (both models),
>= 1,000 creates/s from 16 clients, a 10,000 burst drained at >= 50 % of coglet's own throughput, none lost.
``python -m bench hotpath`` shows where a sync prediction's milliseconds go, step by step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
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

from bench.stores import Store, open_store, wait_all, wait_idle

REPO = Path(__file__).resolve().parents[1]
TOKEN = "r8_benchtoken000000000000000000000000000"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLI = str(Path(sys.executable).with_name("cogport"))
UV_CACHE = Path(tempfile.gettempdir()) / "cogport-test-uv-cache-v1"
PREDICT_REF = "predict.py:Runner"  # both benchmark models


@dataclass(frozen=True)
class BenchModel:
    name: str
    directory: Path
    input: dict[str, Any]
    cog_yaml: str | None = None
    """Written into the pushed copy when the model's folder has no ``cog.yaml`` of its own."""


MODELS = {
    "noop": BenchModel(
        "noop",
        REPO / "tests" / "fixtures" / "models" / "noop",
        {},
        cog_yaml=f'build:\n  python_version: "3.11"\npredict: "{PREDICT_REF}"\n',
    ),
    "realistic": BenchModel(
        "realistic",
        REPO / "bench" / "models" / "realistic",
        {"prompt": "a watercolour fox in the snow", "steps": 30, "temperature": 0.9, "upper": True, "style": "title"},
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, headers=headers, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def cogport_env(data_dir: Path, uv_cache: Path = UV_CACHE, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark's ``cogport serve``: SQLite in ``data_dir`` unless ``env`` says otherwise."""
    return {
        **os.environ,
        "COGPORT_DATA_DIR": str(data_dir),
        "COGPORT_ADMIN_TOKEN": TOKEN,
        "COGPORT_REGISTER_EXAMPLES": "false",
        "COGPORT_DETECT_GPUS": "false",
        "COGPORT_LOG_LEVEL": "warning",
        "COGPORT_BUILD__UV_CACHE_DIR": str(uv_cache),
        **(env or {}),
    }


@contextlib.contextmanager
def cogport_server(data_dir: Path, uv_cache: Path = UV_CACHE, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real ``cogport serve`` (SQLite in ``data_dir`` unless ``env`` says otherwise) on a free port; its log
    goes next to ``data_dir``."""
    port = free_port()
    server_env = cogport_env(data_dir, uv_cache, env)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([CLI, "serve", "--port", str(port)], env=server_env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/account", AUTH)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def push(url: str, directory: Path, name: str) -> str:
    """Create ``admin/<name>`` and ``cogport push`` ``directory`` into it, as a user would; the version id."""
    created = httpx.post(
        f"{url}/v1/models",
        json={"owner": "admin", "name": name, "visibility": "private", "hardware": "cpu"},
        headers=AUTH,
    )
    created.raise_for_status()
    env = {**os.environ, "COGPORT_BASE_URL": url, "COGPORT_API_TOKEN": TOKEN}
    out = subprocess.run(
        [CLI, "push", str(directory), "--model", f"admin/{name}"], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def push_model(url: str, model: BenchModel, work: Path) -> str:
    copy = work / model.name
    shutil.copytree(model.directory, copy, ignore=shutil.ignore_patterns(".cog", "__pycache__"))
    if model.cog_yaml is not None:
        (copy / "cog.yaml").write_text(model.cog_yaml)
    return push(url, copy, model.name)


@contextlib.contextmanager
def direct_coglet(source: str, venv: str) -> Iterator[str]:
    """A coglet server on a version's own venv and source, started as cogport starts its instances."""
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{venv}/bin:{os.environ['PATH']}",
        "PORT": str(port),
        "COG_PREDICT_TYPE_STUB": PREDICT_REF,
        "COG_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [f"{venv}/bin/python", "-m", "cog.server.http", "--host", "127.0.0.1"],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health-check", timeout=1).json().get("status") == "READY":
                    break
            time.sleep(0.05)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def runtime_versions(venv: str) -> str:
    """``cog X, coglet Y`` as installed in a version's venv."""
    code = "import importlib.metadata as m; print(f\"cog {m.version('cog')}, coglet {m.version('coglet')}\")"
    return subprocess.run([f"{venv}/bin/python", "-c", code], capture_output=True, text=True).stdout.strip()


def check_succeeded(response: httpx.Response) -> None:
    body = response.json()
    if body.get("status") != "succeeded":
        raise RuntimeError(f"unexpected response: {response.status_code} {body}")


def timed(client: httpx.Client, n: int, method: str, url: str, **kwargs: Any) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    retries = 0
    began = time.perf_counter()
    for _ in range(n):
        start = time.perf_counter()
        while True:
            response = client.request(method, url, **kwargs)
            if response.status_code != 409:  # coglet's slot-release race: the caller must retry
                break
            retries += 1
        latencies.append((time.perf_counter() - start) * 1000)
        check_succeeded(response)
    return latencies, time.perf_counter() - began, retries


async def direct_concurrent(url: str, body: dict[str, Any], n: int, concurrency: int) -> tuple[float, int]:
    """``n`` sync predictions against coglet from ``concurrency`` clients at once, each retrying coglet's 409
    (busy slot) at once; the seconds taken and the number of 409s."""
    retries = 0
    queue = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal retries
        for _ in queue:
            while (response := await client.post("/predictions", json=body)).status_code == 409:
                retries += 1
            check_succeeded(response)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - began, retries


async def create_many(
    url: str, version: str, n: int, concurrency: int, inputs: dict[str, Any] | None = None
) -> tuple[list[str], float]:
    ids: list[str] = []
    queue = iter(range(n))
    body = {"version": version, "input": inputs or {}}

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in queue:
            response = await client.post("/v1/predictions", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=limits, timeout=60) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return ids, time.perf_counter() - began


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


@dataclass
class Result:
    """One model's figures."""

    model: BenchModel
    n: int
    """Sync predictions per side (and coglet direct from concurrent clients)."""
    direct: list[float]
    direct_s: float
    direct_retries: int
    ours: list[float]
    ours_s: float
    concurrent_s: float
    concurrent_retries: int
    creates_s: float
    burst_s: float = 0.0
    burst: int = 0
    burst_counts: dict[str, int] = field(default_factory=dict)
    wrk_get: float | None = None
    wrk_creates: float | None = None

    @property
    def direct_rps(self) -> float:
        return self.n / self.direct_s

    @property
    def concurrent_rps(self) -> float:
        return self.n / self.concurrent_s

    @property
    def drain_rps(self) -> float:
        return self.burst / self.burst_s

    @property
    def burst_ok(self) -> bool:
        return self.burst_counts.get("succeeded", 0) == self.burst


def note(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def measure(model: BenchModel, url: str, version: str, store: Store, args: argparse.Namespace) -> Result:
    source, venv = store.version_paths(version)
    direct_body = {"input": model.input}
    body = {"version": version, "input": model.input}
    headers = {**AUTH, "Prefer": "wait"}
    with direct_coglet(source, venv) as coglet, httpx.Client(timeout=60) as client:
        note(f"{model.name}: sync, {args.n} per side")
        warm = max(20, args.n // 10)
        timed(client, warm, "POST", f"{coglet}/predictions", json=direct_body)
        timed(client, warm, "POST", f"{url}/v1/predictions", json=body, headers=headers)
        direct, direct_s, retries = timed(client, args.n, "POST", f"{coglet}/predictions", json=direct_body)
        ours, ours_s, _ = timed(client, args.n, "POST", f"{url}/v1/predictions", json=body, headers=headers)
        note(f"{model.name}: coglet direct, {args.concurrency} concurrent clients")
        concurrent_s, concurrent_retries = asyncio.run(direct_concurrent(coglet, direct_body, args.n, args.concurrency))
    note(f"{model.name}: {args.creates} async creates")
    ids, creates_s = asyncio.run(create_many(url, version, args.creates, args.concurrency, model.input))
    wait_all(store, ids, limit_s=600)
    result = Result(model, args.n, direct, direct_s, retries, ours, ours_s, concurrent_s, concurrent_retries, creates_s)
    if args.wrk_seconds:
        note(f"{model.name}: async creates with wrk for {args.wrk_seconds} s")
        result.wrk_get = wrk_rate(url, "/v1/account", None, args.wrk_seconds, args.concurrency)
        result.wrk_creates = wrk_rate(url, "/v1/predictions", body, args.wrk_seconds, args.concurrency)
        wait_idle(store, limit_s=600)
    if args.burst:
        result.burst = args.burst
        note(f"{model.name}: burst of {args.burst}")
        began = time.perf_counter()
        burst_ids, _ = asyncio.run(create_many(url, version, args.burst, args.concurrency, model.input))
        result.burst_counts = wait_all(store, burst_ids, limit_s=1800)
        result.burst_s = time.perf_counter() - began
    return result


def wrk_rate(url: str, path: str, body: dict[str, Any] | None, seconds: int, concurrency: int) -> float | None:
    """Requests/s that ``wrk`` (a light C client: one thread, ``concurrency`` connections) gets for ``path``
    (a POST of ``body``, or a GET); None when ``wrk`` is not installed. The httpx clients of this benchmark
    cost the box more CPU than the server does for a small request, so they measure the pair."""
    if shutil.which("wrk") is None:
        return None
    script = ["wrk.headers['Authorization'] = 'Bearer " + TOKEN + "'"]
    if body is not None:
        payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
        script += ["wrk.method = 'POST'", f"wrk.body = '{payload}'", "wrk.headers['Content-Type'] = 'application/json'"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write("\n".join(script) + "\n")
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", lua.name, url + path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(lua.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:"))
    return float(rate)


def load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def sync_table(r: Result) -> list[str]:
    n = r.n
    rows = [
        ("p50 latency (ms)", pct(r.direct, 0.5), pct(r.ours, 0.5)),
        ("p90 latency (ms)", pct(r.direct, 0.9), pct(r.ours, 0.9)),
        ("p99 latency (ms)", pct(r.direct, 0.99), pct(r.ours, 0.99)),
        ("mean latency (ms)", statistics.mean(r.direct), statistics.mean(r.ours)),
        ("throughput (req/s)", r.direct_rps, n / r.ours_s),
    ]
    inputs = ", ".join(f"{k}={v!r}" for k, v in r.model.input.items()) or "no inputs"
    lines = [
        f"### {r.model.name} (`{r.model.directory.relative_to(REPO)}`; {inputs})",
        "",
        f"sync, `Prefer: wait`, one keep-alive client, n={n} each (direct 409 retries: {r.direct_retries})",
        "",
        "| measure | coglet direct | cogport | added |",
        "|---|---:|---:|---:|",
    ]
    for name, a, b in rows:
        added = f"{b / a * 100:.0f} % of direct" if name.startswith("throughput") else f"{b - a:+.2f}"
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {added} |")
    return lines


def burst_outcome(r: Result) -> str:
    if r.burst_ok:
        return f"all {r.burst:,} succeeded, none lost"
    return "SOME LOST OR FAILED: " + ", ".join(f"{k} {v}" for k, v in sorted(r.burst_counts.items()) if v)


def async_table(results: list[Result], args: argparse.Namespace) -> list[str]:
    c = args.concurrency
    lines = [
        f"| async ({c} concurrent clients) | " + " | ".join(r.model.name for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]

    def row(name: str, cell: Callable[[Result], str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results) + " |")

    row(f"creates/s ({args.creates:,} creates, httpx clients)", lambda r: f"{args.creates / r.creates_s:.0f}")
    if any(r.wrk_creates is not None for r in results):
        row(f"creates/s (wrk, {c} connections, {args.wrk_seconds} s)", lambda r: f"{r.wrk_creates or 0:.0f}")
        row("for scale: `GET /v1/account` with wrk (req/s)", lambda r: f"{r.wrk_get or 0:.0f}")
    row(f"coglet direct throughput, 1 / {c} clients (req/s)", lambda r: f"{r.direct_rps:.0f} / {r.concurrent_rps:.0f}")
    row(f"coglet direct 409 retries with {c} clients", lambda r: f"{r.concurrent_retries:,}")
    if args.burst:
        row(f"burst of {args.burst:,}: all terminal in (s)", lambda r: f"{r.burst_s:.1f}")
        row("burst drain rate (predictions/s)", lambda r: f"{r.drain_rps:.0f}")
        row(
            f"drain rate vs coglet direct, 1 / {c} clients",
            lambda r: f"{r.drain_rps / r.direct_rps * 100:.0f} % / {r.drain_rps / r.concurrent_rps * 100:.0f} %",
        )
        row("burst outcome", burst_outcome)
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench predictions")
    parser.add_argument("--n", type=int, default=500, help="sync predictions per side")
    parser.add_argument("--creates", type=int, default=3000, help="async creates to time")
    parser.add_argument("--burst", type=int, default=10000, help="async predictions in the burst (0: skip)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients for creates and bursts")
    parser.add_argument("--models", default="noop,realistic", help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument("--database-url", default="", help="run cogport on this PostgreSQL database (default: SQLite)")
    parser.add_argument("--wrk-seconds", type=int, default=5, help="also time creates with wrk, if installed (0: skip)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if not names or any(name not in MODELS for name in names):
        parser.error(f"--models: choose from {', '.join(MODELS)}")

    load_start = load()
    results: list[Result] = []
    runtime = ""
    with tempfile.TemporaryDirectory(prefix="cogport-bench-") as tmp:
        work = Path(os.environ.get("COGPORT_BENCH_DIR") or tmp)
        data = work / "data"
        with open_store(args.database_url, data) as store, cogport_server(data, env=store.server_env) as url:
            versions = {name: push_model(url, MODELS[name], work) for name in names}
            runtime = runtime_versions(store.version_paths(versions[names[0]])[1])
            for name in names:
                results.append(measure(MODELS[name], url, versions[name], store, args))
            kind = store.kind
    load_end = load()

    command = " ".join(["python -m bench predictions", *argv])
    print(f"\n`{command}` (cogport on {kind})\n")
    print(
        f"{os.cpu_count()} cores, load average (1 / 5 / 15 min) {load_start} at start, {load_end} at end; "
        f"{platform.python_implementation()} {platform.python_version()}, {runtime}\n"
    )
    for result in results:
        print("\n".join(sync_table(result)) + "\n")
    print("\n".join(async_table(results, args)))
    return 0 if all(r.burst_ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
