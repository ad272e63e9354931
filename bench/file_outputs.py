"""``python -m bench file_outputs``: what an output file costs, uploaded by coglet or sent inline.

One real ``cogport serve`` (SQLite, a fresh data dir) and two models writing ``--mb`` MiB files of random
bytes (``out{i}.png``): ``one`` returns a single ``Path`` (coglet uploads it to cogport's receiver,
``--upload-url``), ``list`` returns ``list[Path]`` (run without ``--upload-url``: coglet sends ``data:``
URLs in the model's order and cogport stores them; see docs/files.md). For each case: the time of a
``Prefer: wait`` prediction (median of ``--n``, after one warm-up), and the peak resident memory (VmHWM)
of the cogport server and of that version's coglet server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.predictions import AUTH, cogport_server
from bench.stream import instance_url, push

MODEL = """import os, tempfile
from cog import BaseRunner, Input, Path


class Runner(BaseRunner):
    def run(self, count: int = Input(default=1), mb: float = Input(default=5)) -> {output}:
        folder = Path(tempfile.mkdtemp())
        paths = []
        for i in range(count):
            paths.append(folder / f"out{{i}}.png")
            paths[-1].write_bytes(os.urandom(int(mb * 1024 * 1024)))
        return {result}
"""
CASES = {"one": ("Path", "paths[0]"), "list": ("list[Path]", "paths")}


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def coglet_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            environ = (proc / "environ").read_bytes().split(b"\0")
            leader = os.getpgid(int(proc.name)) == int(proc.name)
            if leader and b"cog.server.http" in (proc / "cmdline").read_bytes() and f"PORT={port}".encode() in environ:
                return int(proc.name)
    raise RuntimeError(f"no coglet server on port {port}")


def cogport_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1].encode()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"serve" in cmdline and port in cmdline:
                return int(proc.name)
    raise RuntimeError("no cogport server found")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench file_outputs")
    parser.add_argument("--mb", type=float, default=5.0, help="MiB per file")
    parser.add_argument("--count", type=int, default=1, help="files per list output")
    parser.add_argument("--n", type=int, default=5, help="timed predictions per case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cogport-bench-files-") as work:
        data_dir = Path(work) / "data"
        data_dir.mkdir()
        with cogport_server(data_dir) as url:
            server = cogport_pid(url)
            for name, (output, result) in CASES.items():
                model = Path(work) / name
                model.mkdir()
                (model / "predict.py").write_text(MODEL.format(output=output, result=result))
                (model / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredict: "predict.py:Runner"\n')
                version = push(url, model, f"files-{name}")
                count = 1 if name == "one" else args.count
                times = []
                with httpx.Client(base_url=url, headers={**AUTH, "Prefer": "wait=60"}, timeout=120) as client:
                    for _ in range(args.n + 1):
                        started = time.perf_counter()
                        body = client.post(
                            "/v1/predictions", json={"version": version, "input": {"count": count, "mb": args.mb}}
                        ).json()
                        times.append(time.perf_counter() - started)
                        assert body["status"] == "succeeded", body
                        urls = body["output"] if isinstance(body["output"], list) else [body["output"]]
                        assert all("/v1/files/outputs/" in u for u in urls), urls
                        assert len(client.get(urls[-1]).content) == int(args.mb * 1024 * 1024)
                coglet = coglet_pid(instance_url(data_dir, version))
                print(
                    f"{name:5} {count} x {args.mb:g} MiB: median {statistics.median(times[1:]) * 1000:.0f} ms, "
                    f"coglet server peak {peak_mib(coglet):.0f} MiB, cogport peak so far {peak_mib(server):.0f} MiB"
                )
    return 0
