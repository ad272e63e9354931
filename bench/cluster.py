"""``python -m bench cluster``: cogport on a Ray cluster on this machine (``ray.cluster_utils``, loopback).

Side by side in one run:

* throughput of a model that sleeps 50 ms per prediction with one node, then two (one instance per node);
* the latency a sync no-op prediction pays through the Ray backend vs the local backend (same machine);
* a node's time from joining the cluster to its first prediction (under a queue that needs it).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.predictions import AUTH, MODELS, REPO, BenchModel, cogport_server, load, pct, push_model

SLEEPER = BenchModel(
    "sleeper",
    REPO / "tests" / "fixtures" / "models" / "slow",
    {"seconds": 0.05},
    cog_yaml='build:\n  python_version: "3.11"\npredict: "predict.py:Runner"\n',
)


@contextmanager
def ray_cluster() -> Iterator[Any]:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback addresses stay loopback
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False},
    )
    try:
        yield cluster
    finally:
        cluster.shutdown()


async def throughput(url: str, version: str, n: int, concurrency: int = 6) -> float:
    """Predictions per second: ``n`` sync predictions (``Prefer: wait``) from ``concurrency`` clients at once,
    so the queue never runs dry and nothing polls."""
    left = n

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            response = await client.post("/v1/predictions", json={"version": version, "input": SLEEPER.input})
            body = response.json()
            while body.get("status") not in ("succeeded", "failed", "canceled"):
                await asyncio.sleep(0.05)
                body = (await client.get(f"/v1/predictions/{body['id']}")).json()
            if body["status"] != "succeeded":
                raise RuntimeError(f"{body['id']} {body['status']}: {body.get('error')}")

    headers = {**AUTH, "Prefer": "wait=60"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        began = time.monotonic()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return n / (time.monotonic() - began)


def sync_latency(url: str, version: str, n: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, headers={**AUTH, "Prefer": "wait=60"}, timeout=60) as client:
        for _ in range(n + 5):
            began = time.perf_counter()
            response = client.post("/v1/predictions", json={"version": version, "input": {}})
            samples.append((time.perf_counter() - began) * 1000)
            if response.json().get("status") != "succeeded":
                raise RuntimeError(response.text)
    return samples[5:]


def nodes_busy(url: str) -> set[str]:
    results = httpx.get(f"{url}/admin/v1/instances", headers=AUTH).json()["results"]
    return {item["node"] for item in results if item["state"] == "busy"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cluster")
    parser.add_argument("--n", type=int, default=200, help="predictions per throughput run")
    parser.add_argument("--latency-n", type=int, default=100, help="sync no-op predictions per backend")
    args = parser.parse_args(argv)
    load_start = load()
    with tempfile.TemporaryDirectory(prefix="cogport-bench-cluster-") as tmp:
        work = Path(tmp)
        with cogport_server(work / "local" / "data") as url:
            noop = push_model(url, MODELS["noop"], work / "local")
            local_ms = sync_latency(url, noop, args.latency_n)
        with ray_cluster() as cluster:
            env = {"COGPORT_BACKEND": "ray", "COGPORT_RAY__ADDRESS": str(cluster.address)}
            env |= {"COGPORT_RAY__NAMESPACE": "bench", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
            with cogport_server(work / "ray" / "data", env=env) as url:
                noop = push_model(url, MODELS["noop"], work / "ray")
                sleeper = push_model(url, SLEEPER, work / "ray")
                ray_ms = sync_latency(url, noop, args.latency_n)
                asyncio.run(throughput(url, sleeper, 20))  # warm: the head's instance is up
                one = asyncio.run(throughput(url, sleeper, args.n))
                before = nodes_busy(url)
                cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
                joined = time.monotonic()
                load_task = throughput(url, sleeper, args.n * 2)

                async def first_on_new() -> tuple[float, float]:
                    runner = asyncio.create_task(load_task)
                    first = float("nan")
                    while not runner.done():
                        if math.isnan(first) and nodes_busy(url) - before:
                            first = time.monotonic() - joined
                        await asyncio.sleep(0.05)
                    return first, await runner

                join_s, _ = asyncio.run(first_on_new())
                two = asyncio.run(throughput(url, sleeper, args.n))
    load_end = load()
    print(f"\n`python -m bench cluster {' '.join(argv)}`\n")
    print(f"{os.cpu_count()} cores, load average {load_start} at start, {load_end} at end\n")
    print("| sleeps 50 ms per prediction | predictions/s |\n|---|---:|")
    print(f"| one node | {one:.1f} |\n| two nodes | {two:.1f} |\n| two / one | {two / one:.2f}x |\n")
    print("| sync no-op prediction | p50 ms | p90 ms | mean ms |\n|---|---:|---:|---:|")
    for name, samples in (("local backend", local_ms), ("Ray backend", ray_ms)):
        print(f"| {name} | {pct(samples, 0.5):.1f} | {pct(samples, 0.9):.1f} | {statistics.mean(samples):.1f} |")
    print(f"| Ray - local | {pct(ray_ms, 0.5) - pct(local_ms, 0.5):+.1f} | | |\n")
    print(f"A node joining to its first prediction (its first instance started, the version prepared): {join_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
