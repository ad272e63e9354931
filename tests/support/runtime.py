"""Helpers for the runtime tests: the shared cog venv, fixture-model specs, and a recording JobEvents.

The venv (``cog==0.23.1 coglet==0.23.1`` on this interpreter's Python) is built once with uv and
reused across runs and xdist workers: ``$COGPORT_TEST_CACHE`` (default ``~/.cache/cogport-test``)
``/venv-cog-0.23.1``, built under a file lock and marked complete only once the install succeeded.
uv is found as the server finds it (the ``uv`` package's binary, a dependency of cogport), and a runtime
test whose venv cannot be built fails: it never skips. ``$COGPORT_TEST_COG_VENV`` names a ready venv to use
instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from uv import find_uv_bin

from cogport.core.jobs import Job, VersionSpec
from cogport.core.kinds import Mode
from cogport.core.outcome import Outcome
from cogport.runtime import procfs

COG_VERSION = "0.23.1"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
REFS = {"hello": "predict.py:Predictor", "trainer": "train.py:train"}
_venv: Path | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("COGPORT_TEST_CACHE") or Path.home() / ".cache" / "cogport-test")


def cog_venv() -> Path:
    """The shared venv with cog and coglet (built on first use); fails the test if it cannot be built."""
    global _venv
    if _venv is not None:
        return _venv
    given = os.environ.get("COGPORT_TEST_COG_VENV")
    if given:  # a venv prepared elsewhere (offline machines, CI images)
        _venv = Path(given)
        return _venv
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"venv-cog-{COG_VERSION}"
    marker = venv / ".cogport-complete"
    with open(root / f"venv-cog-{COG_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            _build_venv(venv)
            marker.write_text(f"cog=={COG_VERSION}\n")
    _venv = venv
    return venv


def _build_venv(venv: Path) -> None:
    """Build in place (under the lock); the marker file is written only once it is complete."""
    uv = find_uv_bin()  # as the server's builder finds it: never a PATH lookup
    shutil.rmtree(venv, ignore_errors=True)
    try:
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
             f"cog=={COG_VERSION}", f"coglet=={COG_VERSION}"],
            check=True,
            timeout=600,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.fail(f"cannot build the cog venv for runtime tests: {exc}")


def spec(
    model: str,
    *,
    pk: int = 1,
    concurrency: int = 1,
    mode: Mode | None = None,
    environment: dict[str, str] | None = None,
    hardware: str = "cpu",
) -> VersionSpec:
    """A spec for a fixture model (``tests/fixtures/models/<model>``); ``trainer`` runs in train mode."""
    return VersionSpec(
        version_pk=pk,
        version_id=f"{model.replace('_', '')}{pk:04d}{'0' * 8}",
        mode=mode or ("train" if model == "trainer" else "predict"),
        source_path=str(FIXTURES / model),
        venv_path=str(cog_venv()),
        ref=REFS.get(model, "predict.py:Runner"),
        concurrency=concurrency,
        environment=environment or {},
        hardware=hardware,
    )


def new_id() -> str:
    return f"rt{uuid.uuid4().hex[:20]}"


def job(version: VersionSpec, prediction_id: str | None = None, **inputs: Any) -> Job:
    return Job(prediction_id=prediction_id or new_id(), spec=version, input=inputs)


@dataclass
class Events:
    """A JobEvents that records every call, in order, and lets a test wait for them."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    on_finished: Callable[[], None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def started(self, job: Job) -> None:
        self._record("started", None)

    async def logs(self, job: Job, text: str) -> None:
        self._record("logs", text)

    async def output(self, job: Job, output: Any) -> None:
        self._record("output", output)

    async def finished(self, job: Job, outcome: Outcome) -> None:
        assert self.final is None, "finished() called twice"
        if self.on_finished is not None:
            self.on_finished()
        self.final = dataclasses.asdict(outcome)
        self._record("finished", outcome.status)

    def _record(self, name: str, value: Any) -> None:
        self.calls.append((name, value))
        self._changed.set()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    @property
    def log_text(self) -> str:
        return "".join(value for name, value in self.calls if name == "logs")

    async def wait_until(self, predicate: Callable[[Events], bool], within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def finish(self, within: float = 60.0) -> dict[str, Any]:
        await self.wait_until(lambda e: e.final is not None, within)
        assert self.final is not None
        return self.final


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 30.0, step: float = 0.02) -> None:
    """Wait until ``check()`` is true (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(step)


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group."""
    return [p.pid for p in procfs.group_processes(pgid) if p.state != "Z"]


def is_dir(path: str | Path) -> bool:
    return Path(path).is_dir()


def prediction_dir(prediction_id: str, process: Any) -> Path:
    """coglet's ``/tmp/coglet/predictions/<id>`` as the host sees it (a sandboxed instance's ``/tmp`` is a
    tmpfs of its own: through ``/proc/<pid>/root``). ``process``: a live ``CogletProcess``."""
    dirs = process.prediction_dirs
    assert dirs is not None and Path(dirs).parents[1].is_dir(), dirs  # its /tmp is reachable: a miss means something
    return Path(dirs) / prediction_id


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, 9)
