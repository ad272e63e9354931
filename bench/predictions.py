"""``python -m bench predictions``: the prediction path, side by side with coglet itself.

One real ``cogport serve`` (SQLite, a fresh data dir) with the no-op fixture model pushed into it, and one
coglet server started from the same version's virtualenv and source (the same runtime cogport supervises).
The same client (httpx, one keep-alive connection) then runs:

* ``direct``: sync ``POST /predictions`` against coglet;
* ``cogport``: sync ``POST /v1/predictions`` with ``Prefer: wait`` against cogport;
* ``creates``: async creates (no wait) from several concurrent clients into the queue;
* ``burst``: N async no-op predictions created at once, then waited for: all must succeed.

Targets (issue 4): added latency p50 <= 1.5 ms and p99 <= 5 ms, throughput >= 50 % of direct,
>= 1,000 creates/s, a 10,000 burst with none lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
NOOP = REPO / "tests" / "fixtures" / "models" / "noop"
TOKEN = "r8_benchtoken000000000000000000000000000"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLI = str(Path(sys.executable).with_name("cogport"))
UV_CACHE = Path(tempfile.gettempdir()) / "cogport-test-uv-cache-v1"


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


@contextlib.contextmanager
def cogport_server(data_dir: Path, uv_cache: Path = UV_CACHE) -> Iterator[str]:
    """A real ``cogport serve`` (SQLite in ``data_dir``) on a free port; its log goes next to ``data_dir``."""
    port = free_port()
    env = {
        **os.environ,
        "COGPORT_DATA_DIR": str(data_dir),
        "COGPORT_ADMIN_TOKEN": TOKEN,
        "COGPORT_REGISTER_EXAMPLES": "false",
        "COGPORT_DETECT_GPUS": "false",
        "COGPORT_LOG_LEVEL": "warning",
        "COGPORT_BUILD__UV_CACHE_DIR": str(uv_cache),
    }
    log = open(data_dir.parent / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([CLI, "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
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


def push_noop(url: str, work: Path) -> str:
    model_dir = work / "noop"
    shutil.copytree(NOOP, model_dir, ignore=shutil.ignore_patterns(".cog", "__pycache__"))
    (model_dir / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredict: "predict.py:Runner"\n')
    created = httpx.post(
        f"{url}/v1/models",
        json={"owner": "admin", "name": "noop", "visibility": "private", "hardware": "cpu"},
        headers=AUTH,
    )
    created.raise_for_status()
    env = {**os.environ, "COGPORT_BASE_URL": url, "COGPORT_API_TOKEN": TOKEN}
    out = subprocess.run(
        [CLI, "push", str(model_dir), "--model", "admin/noop"], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def direct_coglet(data_dir: Path, version: str) -> Iterator[str]:
    """A coglet server on the version's own venv and source, started as cogport starts its instances."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "cogport.db")) as db:
        source, venv = db.execute("select source_path, venv_path from versions where id = ?", (version,)).fetchone()
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{venv}/bin:{os.environ['PATH']}",
        "PORT": str(port),
        "COG_PREDICT_TYPE_STUB": "predict.py:Runner",
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
        body = response.json()
        if body.get("status") != "succeeded":
            raise RuntimeError(f"unexpected response: {response.status_code} {body}")
    return latencies, time.perf_counter() - began, retries


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def create_many(url: str, version: str, n: int, concurrency: int) -> tuple[list[str], float]:
    ids: list[str] = []
    queue = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in queue:
            response = await client.post("/v1/predictions", json={"version": version, "input": {}})
            response.raise_for_status()
            ids.append(response.json()["id"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=limits, timeout=60) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return ids, time.perf_counter() - began


def wait_all(data_dir: Path, ids: list[str], limit_s: float) -> dict[str, int]:
    """Wait until every prediction is terminal (read from the server's SQLite file, so that watching
    adds no load to the server); returns the count per status, plus ``missing``."""
    import sqlite3

    deadline = time.monotonic() + limit_s
    with contextlib.closing(sqlite3.connect(data_dir / "cogport.db", timeout=30)) as db:
        db.execute("create temp table wanted (id text primary key)")
        db.executemany("insert into wanted values (?)", [(i,) for i in ids])
        db.commit()  # end the implicit transaction, or every read below sees the same snapshot
        while True:
            rows = db.execute(
                "select p.status, count(*) from predictions p join wanted w on w.id = p.id group by p.status"
            ).fetchall()
            counts = dict(rows)
            done = sum(v for k, v in counts.items() if k in ("succeeded", "failed", "canceled", "aborted"))
            if done == len(ids) or time.monotonic() > deadline:
                counts["missing"] = len(ids) - sum(counts.values())
                return counts
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench predictions")
    parser.add_argument("--n", type=int, default=500, help="sync predictions per side")
    parser.add_argument("--creates", type=int, default=3000, help="async creates to time")
    parser.add_argument("--burst", type=int, default=10000, help="async no-op predictions in the burst (0: skip)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients for creates")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cogport-bench-") as tmp:
        work = Path(os.environ.get("COGPORT_BENCH_DIR") or tmp)
        data = work / "data"
        with cogport_server(data) as url:
            version = push_noop(url, work)
            with direct_coglet(data, version) as coglet, httpx.Client(timeout=60) as client:
                warm = max(20, args.n // 10)
                timed(client, warm, "POST", f"{coglet}/predictions", json={"input": {}})
                body = {"version": version, "input": {}}
                headers = {**AUTH, "Prefer": "wait"}
                timed(client, warm, "POST", f"{url}/v1/predictions", json=body, headers=headers)
                direct, direct_s, retries = timed(client, args.n, "POST", f"{coglet}/predictions", json={"input": {}})
                ours, ours_s, _ = timed(client, args.n, "POST", f"{url}/v1/predictions", json=body, headers=headers)
            ids, create_s = asyncio.run(create_many(url, version, args.creates, args.concurrency))
            wait_all(data, ids, limit_s=600)
            burst_counts: dict[str, int] = {}
            burst_s = 0.0
            if args.burst:
                began = time.perf_counter()
                burst_ids, _ = asyncio.run(create_many(url, version, args.burst, args.concurrency))
                burst_counts = wait_all(data, burst_ids, limit_s=1800)
                burst_s = time.perf_counter() - began

    rows = [
        ("p50 latency (ms)", pct(direct, 0.5), pct(ours, 0.5)),
        ("p90 latency (ms)", pct(direct, 0.9), pct(ours, 0.9)),
        ("p99 latency (ms)", pct(direct, 0.99), pct(ours, 0.99)),
        ("mean latency (ms)", statistics.mean(direct), statistics.mean(ours)),
        ("throughput (req/s)", args.n / direct_s, args.n / ours_s),
    ]
    print(f"\nsync no-op predictions, one keep-alive client, n={args.n} each (direct 409 retries: {retries})\n")
    print("| measure | coglet direct | cogport | added |")
    print("|---|---:|---:|---:|")
    for name, a, b in rows:
        added = f"{b / a * 100:.0f} % of direct" if name.startswith("throughput") else f"{b - a:+.2f}"
        print(f"| {name} | {a:.2f} | {b:.2f} | {added} |")
    print(
        f"\nasync creates: {args.creates} in {create_s:.2f} s = {args.creates / create_s:.0f} creates/s "
        f"({args.concurrency} concurrent clients)"
    )
    if args.burst:
        print(f"burst: {args.burst} async no-op predictions, all terminal in {burst_s:.1f} s: {burst_counts}")
        ok = burst_counts.get("succeeded", 0) == args.burst
        print("burst result:", "all succeeded, none lost" if ok else "SOME LOST OR FAILED")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
