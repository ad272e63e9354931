"""Model environments: uv venvs with cog + coglet + the model's packages, shared between versions.

A venv is keyed by what goes into it (interpreter, SDK version, packages, requirements and the files they
name, build commands), so every version with the same requirements uses one venv, built once under a file
lock. uv installs from a shared cache with hardlinks, so even a new venv is cheap once the cache is warm.
The operator's ``UV_*`` variables (``UV_INDEX_URL``, ``UV_FIND_LINKS``, ...) pass through to uv.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cogport.build import process
from cogport.build.errors import BuildError
from cogport.build.interpreters import Interpreter
from cogport.build.log import BuildLog

COMPLETE_MARKER = ".cogport-complete"
LOCK_FILE = "cogport-lock.txt"
"""In a venv built from a lock: the lock it was installed from."""
_REQUIREMENT_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")


@dataclass(frozen=True)
class EnvironmentSpec:
    interpreter: Interpreter
    sdk_version: str
    packages: tuple[str, ...] = ()
    requirements: str | None = None
    """``build.python_requirements``, relative to the model directory."""
    pre_install: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    build_env: Mapping[str, str] = field(default_factory=dict)
    lock: str | None = None
    """A frozen lock (``uv pip freeze`` of a venv built before): installed as it is, alone (``--no-deps``),
    instead of ``packages`` and ``requirements``. How a node rebuilds a version's venv (:mod:`.prepare`)."""

    def key(self, source: Path) -> str:
        """A short hash of everything that decides the venv's contents."""
        facts = {
            "python": [self.interpreter.text, str(self.interpreter.path)],
            "sdk": self.sdk_version,
            "packages": list(self.packages),
            "requirements": _requirements_digest(source, self.requirements) if self.requirements else None,
            "pre_install": list(self.pre_install),
            "run": list(self.run),
            "env": sorted((k, v) for k, v in self.build_env.items() if k.startswith(("UV_", "PIP_"))),
            # Commands may change the model directory too, so such a venv belongs to one build only.
            "source": str(source) if self.pre_install or self.run else None,
        }
        if self.lock is not None:  # only then: the keys of venvs built without a lock stay as they were
            facts["lock"] = hashlib.sha256(self.lock.encode()).hexdigest()
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def _requirements_digest(source: Path, requirements: str) -> str:
    """The requirements file plus the local files it names (``-r``, ``-c``, local wheels)."""
    digest = hashlib.sha256()
    pending = [source / requirements]
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        text = path.read_bytes()
        digest.update(str(path.relative_to(source) if path.is_relative_to(source) else path).encode())
        digest.update(hashlib.sha256(text).digest())
        for line in text.decode(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            for index, word in enumerate(words):
                if word in _REQUIREMENT_FILE_OPTIONS and index + 1 < len(words):
                    pending.append(path.parent / words[index + 1])
                elif word.startswith(("./", "../")) or word.endswith((".whl", ".tar.gz", ".zip")):
                    pending.append(path.parent / word.removeprefix("file:"))
    return digest.hexdigest()


class Environments:
    """The venvs under ``root`` (``<data_dir>/venvs``), built with uv."""

    def __init__(
        self,
        root: Path,
        *,
        uv: str,
        cache_dir: Path | None,
        default_cache_dir: Path,
        timeout: float,
        prefer_offline: bool = True,
    ) -> None:
        self.root = root
        self.prefer_offline = prefer_offline
        self.uv = uv
        self.timeout = timeout
        # An operator's UV_CACHE_DIR counts as configuration too; the data dir is the fallback.
        self.cache_dir = cache_dir or (None if os.environ.get("UV_CACHE_DIR") else default_cache_dir)

    def uv_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        # The process environment passes through on purpose: it is how operators configure uv.
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.update(extra)
        if self.cache_dir is not None:
            env["UV_CACHE_DIR"] = str(self.cache_dir)
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")
        env["UV_NO_PROGRESS"] = "1"
        env["NO_COLOR"] = "1"
        return env

    async def ensure(self, spec: EnvironmentSpec, source: Path, log: BuildLog, *, allow_commands: bool) -> Path:
        """The venv for ``spec``, building it first unless a complete one exists."""
        key = spec.key(source)
        venv = self.root / key
        if (venv / COMPLETE_MARKER).exists():
            log.step(f"Using environment {key} (Python {spec.interpreter.text}, cog {spec.sdk_version})")
            return venv
        self.root.mkdir(parents=True, exist_ok=True)
        async with file_lock(self.root / f"{key}.lock"):
            if (venv / COMPLETE_MARKER).exists():
                log.step(f"Using environment {key}, built meanwhile by another push")
                return venv
            if venv.exists():
                await asyncio.to_thread(shutil.rmtree, venv, True)
            try:
                await self._build(spec, source, venv, log, allow_commands=allow_commands)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, venv, True)
                raise
            (venv / COMPLETE_MARKER).write_text(json.dumps({"python": spec.interpreter.text, "cog": spec.sdk_version}))
        return venv

    async def _build(
        self, spec: EnvironmentSpec, source: Path, venv: Path, log: BuildLog, *, allow_commands: bool
    ) -> None:
        env = self.uv_env(spec.build_env)
        log.step(f"Creating environment {venv.name} with Python {spec.interpreter.text} ({spec.interpreter.path})")
        await process.run(
            [self.uv, "venv", "--python", str(spec.interpreter.path), str(venv)],
            cwd=source,
            env=env,
            log=log,
            time_limit=self.timeout,
            what="creating the virtual environment",
        )
        command_env = {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
        if spec.pre_install:
            await self._commands(spec.pre_install, "build.pre_install", source, command_env, log, allow_commands)
        argv = [self.uv, "pip", "install", "--python", str(venv / "bin" / "python")]
        if spec.lock is not None:
            lock = venv / LOCK_FILE
            lock.write_text(spec.lock, encoding="utf-8")
            argv += ["--no-deps", "-r", str(lock)]
            log.step(f"Installing the locked packages (cog {spec.sdk_version})")
        else:
            argv += [f"cog=={spec.sdk_version}", f"coglet=={spec.sdk_version}", *spec.packages]
            if spec.requirements:
                argv += ["-r", spec.requirements]
            extra = " and the model's Python packages" if spec.packages or spec.requirements else ""
            log.step(f"Installing cog {spec.sdk_version}{extra}")
        if not (self.prefer_offline and await self._install_offline(argv, source, env, log)):
            await process.run(
                argv, cwd=source, env=env, log=log, time_limit=self.timeout, what="installing Python packages"
            )
        if spec.run:
            await self._commands(spec.run, "build.run", source, command_env, log, allow_commands)

    async def freeze(self, venv: Path) -> str:
        """``uv pip freeze`` of ``venv``: every installed distribution, pinned (the lock a node installs).

        stdout alone: uv's warnings (on stderr) must not end up in the lock."""
        argv = [self.uv, "pip", "freeze", "--python", str(venv / "bin" / "python")]
        proc = await asyncio.create_subprocess_exec(
            *argv, env=self.uv_env({}), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise BuildError(f"freezing the environment {venv.name} failed: {err.decode(errors='replace').strip()}")
        return out.decode()

    async def _install_offline(self, argv: list[str], source: Path, env: dict[str, str], log: BuildLog) -> bool:
        """Install from the uv cache alone; False (saying so) when the cache does not hold everything."""
        attempt = BuildLog()
        try:
            await process.run(
                [*argv, "--offline"], cwd=source, env=env, log=attempt, time_limit=self.timeout, what="offline"
            )
        except process.CommandFailed:
            log.line("  (the uv cache does not hold every package: resolving against the index)")
            return False
        log.line(attempt.text.rstrip("\n"))
        log.line("  (installed from the uv cache, offline)")
        return True

    async def _commands(
        self,
        commands: tuple[str, ...],
        where: str,
        source: Path,
        env: dict[str, str],
        log: BuildLog,
        allow_commands: bool,
    ) -> None:
        if not allow_commands:  # also checked before the build starts; kept here as the last guard
            raise BuildError(f"{where} commands are disabled on this server")
        for command in commands:
            log.step(f"RUN {command}")
            await process.run(
                ["/bin/sh", "-c", command],
                cwd=source,
                env=env,
                log=log,
                time_limit=self.timeout,
                what=f"{where}: {command}",
            )


@contextlib.asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive ``flock`` that also works between processes; polled so the event loop stays free."""
    handle = path.open("a+")
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                await asyncio.sleep(0.1)
        yield
    finally:
        handle.close()
