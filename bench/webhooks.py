"""``python -m bench webhooks``: terminal webhook delivery, deliveries/s and lag, this checkout vs a baseline.

Each side runs in a child process of its own (``drive``): the real app (``create_app``, its lifespan: group
writer, webhook sender, everything else idle) on a fresh SQLite data dir (or a fresh PostgreSQL schema with
``--database-url``). The child queues terminal webhooks as ending runs do (``ops.webhooks.enqueue`` in the
group writer's transaction, waking the sender once committed), with a body that carries the moment it was
queued, and waits until the receiver has them all:

* ``burst``: ``--n`` webhooks queued at once (a burst of runs ending together, or a receiver back up);
* ``paced``: ``--n`` webhooks queued at ``--rate`` per second (runs ending steadily);
* ``slow``: as ``paced``, plus one webhook in ten to a second receiver that never answers.

The fast receiver (``receive``, another process: uvicorn + httptools, keep-alive) notes each arrival; lag is
arrival minus queued. ``deliveries/s`` is webhooks delivered over the time from the first queued to the last
received. Duplicates (a ``webhook-id`` received twice) are counted. ``--baseline REF`` runs the same
scenarios against ``REF``'s ``src/`` from a temporary git worktree, side by side (the driver and receiver
are this file's; they use only ``create_app``, ``app.state.writer``/``services`` and ``ops.webhooks.enqueue``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("burst", "paced", "slow")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the receiver (its own process) ---------------------------------------------------------------------


def receive(port: int, hang: bool) -> None:
    """Answer every POST 200 at once (or never, with ``hang``), noting ``(webhook-id, queued, arrived)``;
    ``GET /arrivals`` returns them, ``DELETE /arrivals`` forgets them."""
    import uvicorn

    arrivals: list[tuple[str, float, float]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            now = time.time()
            if hang:
                await asyncio.Event().wait()
            headers = dict(scope["headers"])
            arrivals.append((headers.get(b"webhook-id", b"").decode(), json.loads(body)["queued"], now))
            payload = b""
        elif scope["method"] == "DELETE":
            arrivals.clear()
            payload = b""
        else:
            payload = json.dumps(arrivals).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(payload))]}
        )
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http="httptools", access_log=False)


@contextlib.contextmanager
def receiver(hang: bool = False) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.webhooks", "receive", "--port", str(port)] + (["--hang"] if hang else [])
    process = subprocess.Popen(argv, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/arrivals", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.kill()  # a hung receiver's open requests would hold up a graceful stop
        process.wait(timeout=10)


# --- the driver (a child process per side) --------------------------------------------------------------


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import select

    from cogport.app import create_app
    from cogport.db.tables import Account
    from cogport.ops import webhooks as delivery_ops
    from cogport.settings import Settings, WebhookSettings
    from cogport.webhooks import signing

    data_dir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    settings = Settings(
        data_dir=data_dir,
        database_url=args.database_url or "",
        database_schema=f"bench_{uuid.uuid4().hex[:8]}" if args.database_url else None,
        admin_token="r8_" + "b" * 37,
        detect_gpus=False,
        register_examples=False,
        log_level="warning",
        webhooks=WebhookSettings(allow_private_networks=True),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state
        async with state.database.session() as session:
            account_id = (await session.execute(select(Account.id).limit(1))).scalar_one()

        def wake() -> None:
            state.services.wake("webhooks")

        def queue(count: int, url: str) -> Any:
            def operation(tx: Any) -> None:
                now = time.time()
                for _ in range(count):
                    body = json.dumps({"id": uuid.uuid4().hex, "status": "succeeded", "queued": now})
                    delivery_ops.enqueue(
                        tx,
                        prediction_id=uuid.uuid4().hex[:26],
                        account_id=account_id,
                        url=url,
                        body=body,
                        message_id=signing.new_message_id(),
                    )
                tx.on_commit(wake)

            return state.writer.run(operation)

        fast = f"{args.fast}/hook"
        started = time.time()
        if args.scenario == "burst":
            await queue(args.n, fast)
        else:
            # Runs end steadily: a batch every 10 ms, each in its own transaction as the group writer forms them.
            tick, sent, slow_sent = 0.01, 0, 0
            while sent < args.n:
                due = min(args.n, int((time.time() - started) * args.rate) + 1)
                if due > sent:
                    writes = [queue(due - sent, fast)]
                    if args.scenario == "slow":
                        slow_due = due // 10
                        if slow_due > slow_sent:
                            writes.append(queue(slow_due - slow_sent, f"{args.slow}/hook"))
                            slow_sent = slow_due
                    await asyncio.gather(*writes)
                    sent = due
                await asyncio.sleep(tick)
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.monotonic() + args.timeout
            while True:
                arrivals = (await client.get(f"{args.fast}/arrivals")).json()
                if len({a[0] for a in arrivals}) >= args.n or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # late duplicates, if any
            arrivals = (await client.get(f"{args.fast}/arrivals")).json()
    ids = [a[0] for a in arrivals]
    lags = [a[2] - a[1] for a in arrivals]
    last = max((a[2] for a in arrivals), default=started)
    return {
        "delivered": len(set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "per_s": len(set(ids)) / max(last - started, 1e-9),
        "seconds": last - started,
        "first_s": min((a[2] for a in arrivals), default=started) - started,
        "lag_p50": pct(lags, 0.5),
        "lag_p99": pct(lags, 0.99),
        "lag_max": max(lags, default=float("nan")),
    }


def run_side(src: Path, scenario: str, args: argparse.Namespace, fast: str, slow: str) -> dict[str, Any]:
    httpx.delete(f"{fast}/arrivals")
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
    argv = [
        sys.executable, "-m", "bench.webhooks", "drive", "--scenario", scenario, "--n", str(args.n),
        "--rate", str(args.rate), "--fast", fast, "--slow", slow, "--timeout", str(args.timeout),
    ]  # fmt: skip
    if args.database_url:
        argv += ["--database-url", args.database_url]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the driver failed ({src}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True, capture_output=True)
    try:
        yield path / "src"
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False, capture_output=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench webhooks", description=__doc__.split("\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=("bench", "drive", "receive"))
    parser.add_argument("--n", type=int, default=3000, help="webhooks per scenario (fast receiver)")
    parser.add_argument("--rate", type=float, default=500.0, help="runs ending per second (paced, slow)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--baseline", help="a git ref to compare against (its src/, from a worktree)")
    parser.add_argument("--database-url", default="", help="PostgreSQL (a fresh schema per side); SQLite if unset")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a side may take per scenario")
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--fast", help=argparse.SUPPRESS)
    parser.add_argument("--slow", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hang", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "receive":
        receive(args.port, args.hang)
        return 0
    if args.role == "drive":
        print(json.dumps(asyncio.run(drive(args))))
        return 0
    sides: list[tuple[str, Path]] = [("now", ROOT / "src")]
    with contextlib.ExitStack() as stack:
        if args.baseline:
            sides.insert(0, (args.baseline, stack.enter_context(worktree(args.baseline))))
        fast = stack.enter_context(receiver())
        slow = stack.enter_context(receiver(hang=True))
        print(
            f"{'scenario':8} {'side':10} {'delivered':>9} {'dup':>4} {'per s':>8} {'lag p50':>9} {'p99':>8} {'max':>8}"
        )
        for scenario in args.scenarios.split(","):
            for name, src in sides:
                r = run_side(src, scenario, args, fast, slow)
                print(
                    f"{scenario:8} {name:10} {r['delivered']:9d} {r['duplicates']:4d} {r['per_s']:8.0f} "
                    f"{r['lag_p50']:8.2f}s {r['lag_p99']:7.2f}s {r['lag_max']:7.2f}s",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
