"""``python -m bench push``: ``cogport push`` → version ready, for ``examples/hello-world``, timed end to end.

Each round starts a real ``cogport serve`` on a fresh data dir (SQLite) and runs ``cogport push`` as a user
would (a new process each time, so CLI start-up counts). Scenarios:

* ``new venv``: the first push on the server, so its venv is created (from a warm uv cache);
* ``new version``: ``predict.py`` changed, so the model is inspected again but the venv is reused;
* ``same content``: pushed again unchanged, so the version exists and nothing is built;
* ``cold cache`` (``--cold``): the first push with an empty uv cache (downloads cog and coglet; network-bound).

The target is 3 s for a push with a warm uv cache. ``server`` is the build's own time (``created_at`` to
``completed_at`` of ``GET /v1/builds/{id}``); ``total`` is what the user waits for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx

from bench.predictions import AUTH, CLI, TOKEN, cogport_server

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "hello-world"
TARGET_S = 3.0


@contextlib.contextmanager
def server(data_dir: Path, uv_cache: Path) -> Iterator[str]:
    """A fresh server with an empty ``admin/hello`` model to push into."""
    with cogport_server(data_dir, uv_cache) as url:
        response = httpx.post(
            f"{url}/v1/models",
            json={"owner": "admin", "name": "hello", "visibility": "private", "hardware": "cpu"},
            headers=AUTH,
        )
        response.raise_for_status()
        yield url


def push(url: str, directory: Path) -> tuple[float, float | None]:
    """``(total seconds, server-side build seconds)`` for one ``cogport push``."""
    env = {**os.environ, "COGPORT_BASE_URL": url, "COGPORT_API_TOKEN": TOKEN, "NO_COLOR": "1"}
    started = time.perf_counter()
    proc = subprocess.run(
        [CLI, "push", str(directory), "--model", "admin/hello"], env=env, capture_output=True, text=True, check=False
    )
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"push failed:\n{proc.stderr}")
    match = re.search(r"Build (\w+): starting", proc.stderr)
    if match is None:
        return total, None  # already existed: no build ran
    build = httpx.get(f"{url}/v1/builds/{match.group(1)}", headers=AUTH).json()
    created = datetime.fromisoformat(build["created_at"].replace("Z", "+00:00"))
    completed = datetime.fromisoformat(build["completed_at"].replace("Z", "+00:00"))
    return total, (completed - created).total_seconds()


def one_round(work: Path, uv_cache: Path, index: int) -> dict[str, tuple[float, float | None]]:
    data_dir = work / f"data-{index}"
    variant = work / f"variant-{index}"
    shutil.copytree(EXAMPLE, variant)
    with (variant / "predict.py").open("a") as handle:
        handle.write(f"\n# bench round {index} {time.time_ns()}\n")
    results = {}
    with server(data_dir, uv_cache) as url:
        results["new venv"] = push(url, EXAMPLE)
        results["new version"] = push(url, variant)
        results["same content"] = push(url, variant)
    shutil.rmtree(data_dir, ignore_errors=True)
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uv-cache", type=Path, default=Path(tempfile.gettempdir()) / "cogport-bench-uv-cache")
    parser.add_argument("--cold", action="store_true", help="also time a push with an empty uv cache")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)

    samples: dict[str, list[tuple[float, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="cogport-bench-") as tmp:
        work = Path(tmp)
        if args.cold:
            cold_cache = work / "cold-uv-cache"
            with server(work / "cold-data", cold_cache) as url:
                samples["cold cache"] = [push(url, EXAMPLE)]
        one_round(work, args.uv_cache, -1)  # warm-up: fills the uv cache, not counted
        for index in range(args.rounds):
            for scenario, figures in one_round(work, args.uv_cache, index).items():
                samples.setdefault(scenario, []).append(figures)

    print(f"cogport push → version ready (examples/hello-world), {args.rounds} rounds, target {TARGET_S:.0f} s\n")
    print(f"{'scenario':14} {'total median':>13} {'min':>7} {'max':>7} {'server median':>14}  target")
    for scenario, figures in samples.items():
        totals = [total for total, _ in figures]
        builds = [build for _, build in figures if build is not None]
        server_median = f"{statistics.median(builds):.2f} s" if builds else "-"
        verdict = "ok" if statistics.median(totals) <= TARGET_S or scenario == "cold cache" else "MISSED"
        print(
            f"{scenario:14} {statistics.median(totals):>11.2f} s {min(totals):>5.2f} s {max(totals):>5.2f} s "
            f"{server_median:>14}  {verdict}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(samples, indent=2))
    return 0
