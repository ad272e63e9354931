"""``python -m bench start``: ``cogport serve`` to its first answered request, this checkout vs a baseline.

Each start is a real ``cogport serve`` (the command line's ``main``, in a fresh Python process) with the
embedded defaults: SQLite and local files in a data dir of its own, on a free port, the admin token set,
everything else as a plain start (examples registered, GPUs detected, the web playground on). The clock runs
from launching the process to the first answer of ``GET /v1/account`` (authenticated: the database, the
token, a route; polled every 5 ms). Two kinds of start:

* ``fresh``: an empty data dir (migrations create the schema, the admin account is made);
* ``again``: the same data dir started a second time (the database already at head).

Also the time to ``import cogport.app`` alone, in a fresh process. Each kind is
run ``--n`` times per side, the sides interleaved, and the median printed. ``--baseline REF`` runs the same
against ``REF``'s ``src/`` from a temporary git worktree, side by side (as ``bench webhooks`` does).

Bytecode: an installed server reads its modules' compiled bytecode (pip, and uv with ``--compile-bytecode``,
write it at install; Python itself on the first import, unless ``PYTHONDONTWRITEBYTECODE`` is set). A box
that sets ``PYTHONDONTWRITEBYTECODE=1`` over a virtualenv installed without bytecode (this one) compiles every
module it imports, third-party ones included, on every start: more than half of the start. So by default
each side is started once first, untimed, with Python allowed to write bytecode into a cache of the run's
own (``PYTHONPYCACHEPREFIX`` in the scratch folder: the checkout and the virtualenv are left as they are);
``--no-bytecode-cache`` keeps the environment as it is (every start compiles).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.predictions import TOKEN, free_port, load
from bench.webhooks import ROOT, worktree

LAUNCH = "from cogport.cli.main import main; main()"
TICK = os.sysconf("SC_CLK_TCK")


def answered(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/v1/account", headers={"Authorization": f"Bearer {TOKEN}"})
        status = connection.getresponse().status
    except OSError:
        return False
    finally:
        connection.close()
    if status != 200:
        raise RuntimeError(f"GET /v1/account answered {status}")
    return True


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far (Linux's ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def environment(src: Path, pycache: Path | None) -> dict[str, str]:
    """The environment a side runs in: its ``src`` first on the path; with ``pycache``, bytecode written and
    read there (``PYTHONPYCACHEPREFIX``) whatever ``PYTHONDONTWRITEBYTECODE`` said."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def start_once(src: Path, data_dir: Path, timeout: float, pycache: Path | None) -> tuple[float, float]:
    """Seconds from launching ``cogport serve`` to its first answered request, and the CPU seconds the server
    used until then (less noisy than the wall time on a busy machine); the server is stopped after."""
    port = free_port()
    env = {
        **environment(src, pycache),
        "COGPORT_DATA_DIR": str(data_dir),
        "COGPORT_ADMIN_TOKEN": TOKEN,
        "COGPORT_LOG_LEVEL": "warning",
    }
    log = data_dir.parent / f"{data_dir.name}.log"
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    try:
        while not answered(port):
            if process.poll() is not None:
                raise RuntimeError(f"cogport serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"no answer within {timeout} s")
            time.sleep(0.005)
        return time.perf_counter() - started, cpu_seconds(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def import_seconds(src: Path, pycache: Path | None) -> float:
    """``import cogport.app`` alone, in a fresh process."""
    code = "import time; t = time.perf_counter(); import cogport.app; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=environment(src, pycache),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench start", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5, help="starts of each kind per side (median)")
    parser.add_argument("--baseline", help="a git ref to compare against (its src/, from a worktree)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a start may take")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="no untimed first start writing bytecode: the environment as it is (PYTHONDONTWRITEBYTECODE=1 over a "
        "virtualenv without bytecode compiles every module at every start)",
    )
    args = parser.parse_args(argv)
    sides: list[tuple[str, Path]] = [("now", ROOT / "src")]
    kinds = ("import", "fresh", "fresh cpu", "again", "again cpu")
    with contextlib.ExitStack() as stack:
        if args.baseline:
            sides.insert(0, (args.baseline, stack.enter_context(worktree(args.baseline))))
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-start-")))
        pycache = None if args.no_bytecode_cache else scratch / "pycache"
        if pycache is not None:
            for name, src in sides:  # untimed: writes the bytecode of all that a fresh start imports
                start_once(src, scratch / f"{name.replace('/', '_')}-first", args.timeout, pycache)
        load_start = load()
        times: dict[tuple[str, str], list[float]] = {(name, kind): [] for name, _ in sides for kind in kinds}
        for round_ in range(args.n):
            for name, src in sides:
                data_dir = scratch / f"{name.replace('/', '_')}-{round_}"
                times[name, "import"].append(import_seconds(src, pycache))
                for kind in ("fresh", "again"):
                    wall, cpu = start_once(src, data_dir, args.timeout, pycache)
                    times[name, kind].append(wall)
                    times[name, f"{kind} cpu"].append(cpu)
                shutil.rmtree(data_dir, ignore_errors=True)
        print(f"{os.cpu_count()} cores, load average {load_start} at start, {load()} at end; n={args.n}, medians")
        compiled = "compiles every module at each start" if pycache is None else "bytecode cached (a first start)"
        print(f"bytecode: {compiled}")
        print("(start: wall seconds to the first answer of GET /v1/account; cpu: the server's CPU seconds till then)\n")
        print("| side | import cogport.app | start, fresh data dir | cpu | start again | cpu |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, _ in sides:
            cells = " | ".join(f"{statistics.median(times[name, kind]):.2f} s" for kind in kinds)
            print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
