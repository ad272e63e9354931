"""Run a build command, stream its output into the build log, and kill it (whole group) on cancel or timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from cogport.build.errors import BuildError
from cogport.build.log import BuildLog
from cogport.runtime.limits import Cgroup, cgroup_name, confine
from cogport.settings import SandboxLimits


class CommandFailed(BuildError):
    def __init__(self, message: str, returncode: int, tail: list[str]) -> None:
        self.returncode = returncode
        self.tail = tail
        super().__init__(message)


async def run(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: BuildLog,
    time_limit: float,
    what: str,
    indent: str = "  ",
    pass_fds: tuple[int, ...] = (),
    limits: SandboxLimits | None = None,
) -> None:
    """Run ``argv``; its output lines go to ``log``. Raises :class:`CommandFailed` naming ``what``.
    ``pass_fds``: descriptors it inherits (a sandbox's seccomp filter). ``limits``: a sandboxed step's
    memory, process and CPU bounds (a cgroup of its own, where cogport is root) and rlimits; crossing one
    fails the step with a message that names it."""
    cgroup: Cgroup | None = None
    if limits is not None:
        cgroup = await asyncio.to_thread(Cgroup.create, cgroup_name(f"build-{uuid.uuid4().hex[:16]}"), limits)
    try:
        await _run(argv, cwd, env, log, time_limit, what, indent, pass_fds, confine(cgroup, limits) if limits else None)
    except CommandFailed as failed:
        crossed = cgroup.violation() if cgroup is not None else None
        if crossed is None:
            raise
        raise BuildError(f"{what}: the build {crossed}") from failed
    finally:
        if cgroup is not None:
            cgroup.close_attach()
            await asyncio.to_thread(cgroup.remove)


async def _run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    log: BuildLog,
    time_limit: float,
    what: str,
    indent: str,
    pass_fds: tuple[int, ...],
    preexec: Callable[[], None] | None,
) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=preexec,
        )
    except OSError as exc:
        raise BuildError(f"{what}: cannot run {argv[0]}: {exc}") from None
    tail: deque[str] = deque(maxlen=15)

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            tail.append(line)
            log.line(indent + line)

    try:
        async with asyncio.timeout(time_limit):
            await pump()
            returncode = await proc.wait()
    except TimeoutError:
        _kill(proc.pid)
        await proc.wait()
        raise BuildError(f"{what} took longer than {time_limit:.0f}s and was stopped") from None
    except BaseException:
        _kill(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    if returncode != 0:
        detail = "\n".join(line for line in tail if line.strip())
        raise CommandFailed(f"{what} failed (exit status {returncode}):\n{detail}", returncode, list(tail))


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
