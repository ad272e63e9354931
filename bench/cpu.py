"""``python -m bench cpu``: cogport's server CPU per sync prediction, A/B against git refs, interleaved.

The figure that matters on a small shared box is the CPU the server process spends per request: wall-clock
latency there measures the neighbours. For each side (the working tree, and each ``--baseline REF`` as its
``src/`` from a git worktree) a real ``cogport serve`` is started once (SQLite in a fresh data dir), the noop
model pushed and warmed up; then rounds of ``--requests`` sequential sync predictions (``Prefer: wait``, one
keep-alive httpx client) go to each side in turn (A B A B ...), and each block's CPU (utime + stime of the server
process alone, from ``/proc/<pid>/stat``) is divided by its requests. Prints per round, the medians, and the
paired difference to the first side (the same round, so the same neighbours).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.peers import CLOCK, load, profile, py_spy, worktree
from bench.predictions import AUTH, CLI, MODELS, cogport_env, free_port, note, pct, push_model, wait_http

REPO = Path(__file__).resolve().parents[1]


def times(pid: int) -> tuple[float, float]:
    """utime and stime of ``pid`` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK, int(fields[12]) / CLOCK


class Side:
    def __init__(self, name: str, work: Path, env: dict[str, str]) -> None:
        self.name = name
        data = work / name.replace("/", "_") / "data"
        data.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.log = open(data.parent / "server.log", "wb")  # noqa: SIM115
        command = [sys.executable, CLI, "serve", "--port", str(port)]
        self.process = subprocess.Popen(command, env=cogport_env(data, env=env), stdout=self.log, stderr=self.log)
        self.base = f"http://127.0.0.1:{port}"
        wait_http(f"{self.base}/v1/account", AUTH)
        self.version = push_model(self.base, MODELS["noop"], data.parent)
        self.client = httpx.Client(timeout=60, headers={**AUTH, "Prefer": "wait"})
        self.cpu_ms: list[float] = []
        self.system_ms: list[float] = []
        """Of which in the kernel (stime)."""
        self.latencies: list[float] = []

    def run(self, n: int) -> list[float]:
        body = {"version": self.version, "input": {}}
        latencies = []
        for _ in range(n):
            began = time.perf_counter()
            response = self.client.post(f"{self.base}/v1/predictions", json=body)
            latencies.append((time.perf_counter() - began) * 1000)
            if response.status_code != 201 or response.json().get("status") != "succeeded":
                raise RuntimeError(f"{self.name}: unexpected answer {response.status_code} {response.text[:200]}")
        return latencies

    def block(self, n: int) -> float:
        user, system = times(self.process.pid)
        self.latencies += self.run(n)
        user_after, system_after = times(self.process.pid)
        used = (user_after - user + system_after - system) / n * 1000
        self.cpu_ms.append(used)
        self.system_ms.append((system_after - system) / n * 1000)
        return used

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="a git ref (or a folder with a src/cogport) to compare with (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=500, help="sequential sync predictions per side and round")
    parser.add_argument("--warm-up", type=int, default=200)
    parser.add_argument("--no-current", action="store_true", help="only the baselines (e.g. two refs)")
    parser.add_argument("--py-spy", type=Path, help="then one more block of the first side under py-spy, into FILE")
    args = parser.parse_args(argv)
    print(f"load average at start: {load()}", flush=True)
    sides: list[Side] = []
    with tempfile.TemporaryDirectory(prefix="cogport-cpu-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        wanted: list[tuple[str, dict[str, str]]] = [] if args.no_current else [("now", {})]
        for ref in args.baseline:
            tree = Path(ref) if Path(ref, "src", "cogport").is_dir() else stack.enter_context(worktree(ref))
            wanted.append((ref, {"PYTHONPATH": f"{tree}/src"}))
        try:
            for name, env in wanted:
                note(f"{name}: starting, pushing the noop model")
                side = Side(name, work, env)
                sides.append(side)
                side.run(args.warm_up)
            for round_ in range(args.rounds):
                order = sides if round_ % 2 == 0 else sides[::-1]
                figures = {side.name: side.block(args.requests) for side in order}
                note(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{n} {v:.3f}" for n, v in figures.items())
                    + f" (load {load()})"
                )
            if args.py_spy:
                with py_spy(sides[0].process.pid, args.py_spy):
                    sides[0].run(args.requests)
        finally:
            for side in sides:
                side.close()
    print(f"\nload average at end: {load()}; {args.rounds} rounds of {args.requests} sync predictions per side\n")
    print("| side | server CPU ms/prediction (median) | of which kernel | min | max | p50 ms | p99 ms | paired diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    first = sides[0]
    for side in sides:
        diffs = [b - a for a, b in zip(first.cpu_ms, side.cpu_ms, strict=True)]
        diff = "" if side is first else f"{statistics.median(diffs):+.3f}"
        cpu = side.cpu_ms
        print(
            f"| {side.name} | {statistics.median(cpu):.3f} | {statistics.median(side.system_ms):.3f} "
            f"| {min(cpu):.3f} | {max(cpu):.3f} | {pct(side.latencies, 0.5):.2f} | {pct(side.latencies, 0.99):.2f} "
            f"| {diff} |"
        )
    if args.py_spy and args.py_spy.exists():
        print("\n" + "\n".join(profile(args.py_spy, args.requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
