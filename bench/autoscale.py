"""``python -m bench autoscale``: a deployment scaling from zero, under a queue, and back, side by side with
coglet's own boot of the same model.

One real ``cogport serve`` (SQLite, fresh data dir, ``COGPORT_RUNTIME__IDLE_TIMEOUT`` short) with the
``slow`` fixture model pushed and deployed with ``min_instances=0, max_instances=2``. Measured:

* **cold**: the first sync prediction (``seconds=0``) of the deployment at zero instances, request to
  output, against coglet's own boot of the same version (spawn ``python -m cog.server.http`` → READY →
  the same prediction), ``--rounds`` times each, waiting for the deployment to scale back to zero between;
* **scale-out**: ``--queue`` predictions of ``--seconds`` each created at once at one instance warm: the time
  until a second instance is busy (``GET .../instances``), and how many predictions were dropped (must be 0);
* **scale-in**: the time until the deployment is back at zero instances once idle.

Peers publish, for scale: RunPod adds a worker when a request waits 4 s; Knative's panic window is 6 s
(stable window 60 s); Ray Serve's default upscale delay is 30 s and downscale delay 600 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.predictions import AUTH, REPO, cogport_server, direct_coglet, load, push
from bench.stores import open_store

SLOW = REPO / "tests" / "fixtures" / "models" / "slow"


def until(check: Callable[[], Any], limit_s: float = 120.0, poll_s: float = 0.02) -> float:
    """Seconds until ``check()`` is true."""
    began = time.perf_counter()
    while not check():
        if time.perf_counter() - began > limit_s:
            raise RuntimeError("timed out")
        time.sleep(poll_s)
    return time.perf_counter() - began


def instances(url: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/v1/deployments/admin/bench/instances", headers=AUTH, timeout=10).json()
    results: list[dict[str, Any]] = body["results"]
    return results


def cold_cogport(url: str) -> float:
    began = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/deployments/admin/bench/predictions",
        json={"input": {"seconds": 0}},
        headers={**AUTH, "Prefer": "wait"},
        timeout=120,
    )
    elapsed = time.perf_counter() - began
    if response.json().get("status") != "succeeded":
        raise RuntimeError(response.text)
    return elapsed


def cold_coglet(source: str, venv: str) -> float:
    began = time.perf_counter()
    with direct_coglet(source, venv) as coglet:
        while True:
            response = httpx.post(f"{coglet}/predictions", json={"input": {"seconds": 0}}, timeout=120)
            if response.status_code != 409:
                break
        if response.json().get("status") != "succeeded":
            raise RuntimeError(response.text)
        return time.perf_counter() - began


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench autoscale")
    parser.add_argument("--rounds", type=int, default=5, help="cold starts per side")
    parser.add_argument("--queue", type=int, default=8, help="predictions created at once for the scale-out")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each of those runs")
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    load_start = load()
    with tempfile.TemporaryDirectory(prefix="cogport-autoscale-") as tmp:
        work = Path(tmp)
        data = work / "data"
        env = {"COGPORT_RUNTIME__IDLE_TIMEOUT": str(args.idle_timeout), "COGPORT_RUNTIME__MAX_INSTANCES": "8"}
        with open_store(None, data) as store, cogport_server(data, env=env) as url:
            copy = work / "slow"
            copy.mkdir()
            (copy / "predict.py").write_text((SLOW / "predict.py").read_text())
            (copy / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredict: "predict.py:Runner"\n')
            version = push(url, copy, "slow")
            source, venv = store.version_paths(version)
            deployment = {"name": "bench", "model": "admin/slow", "version": version, "hardware": "cpu",
                          "min_instances": 0, "max_instances": 2}  # fmt: skip
            httpx.post(f"{url}/v1/deployments", json=deployment, headers=AUTH).raise_for_status()
            ours, theirs = [], []
            for _ in range(args.rounds):
                until(lambda: instances(url) == [], limit_s=60)
                ours.append(cold_cogport(url))
                theirs.append(cold_coglet(source, venv))
            # Scale-out: one instance warm, then a queue at once.
            began = time.perf_counter()
            created = [
                httpx.post(
                    f"{url}/v1/deployments/admin/bench/predictions",
                    json={"input": {"seconds": args.seconds}},
                    headers=AUTH,
                ).json()
                for _ in range(args.queue)
            ]
            second_busy = until(lambda: sum(i["state"] == "busy" for i in instances(url)) >= 2, limit_s=60)
            peak = len(instances(url))
            finals = []
            for prediction in created:
                while (body := httpx.get(prediction["urls"]["get"], headers=AUTH).json())["status"] not in (
                    "succeeded",
                    "failed",
                    "canceled",
                ):
                    time.sleep(0.05)
                finals.append(body["status"])
            drained = time.perf_counter() - began
            back_to_zero = until(lambda: instances(url) == [], limit_s=120)
    dropped = sum(status != "succeeded" for status in finals)
    print(f"\n`python -m bench autoscale {' '.join(argv)}` (cogport on SQLite)\n")
    print(f"{os.cpu_count()} cores, load average {load_start} at start, {load()} at end\n")
    print("| measure | coglet's own boot | cogport deployment at zero |")
    print("|---|---:|---:|")
    print(f"| first prediction from zero, median of {args.rounds} (s) | {statistics.median(theirs):.2f} | "
          f"{statistics.median(ours):.2f} |")  # fmt: skip
    print(f"| min / max (s) | {min(theirs):.2f} / {max(theirs):.2f} | {min(ours):.2f} / {max(ours):.2f} |")
    print(f"\nscale-out: {args.queue} predictions of {args.seconds:g} s created at once, max_instances=2: "
          f"second instance busy after {second_busy:.2f} s, peak {peak} instances, all done in {drained:.1f} s, "
          f"dropped {dropped}")  # fmt: skip
    print(f"scale-in: back to zero instances {back_to_zero:.1f} s after the last prediction "
          f"(idle timeout {args.idle_timeout:g} s)")  # fmt: skip
    return 0 if dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
