"""Model environments: uv venvs with cog + coglet + the model's packages, shared between versions.

A venv is keyed by what goes into it (interpreter, SDK version, packages, requirements and the files they
name, build commands), so every version with the same requirements uses one venv, built once under a file
lock. uv installs from a shared cache with hardlinks, so even a new venv is cheap once the cache is warm.

**Two phases** (where the model sandbox is on, :class:`BuildBoundary`):

1. *Wheels only*, on the host: ``uv venv`` and ``uv pip install --no-build`` with the shared cache,
   offline first. No package code runs (wheels are unpacked, never executed; no bytecode compilation),
   uv reads no configuration file (``--no-config``: a model's ``pyproject.toml``/``uv.toml`` could
   otherwise turn on bytecode compilation, which runs the venv's interpreter, or move the cache), and uv
   gets a minimal environment (:func:`uv_environment`: the operator's ``UV_*`` configuration, proxies,
   certificates, ``PATH``/``HOME``/locale; never ``COGPORT_*`` or other secrets). Local files the
   requirements name must lie inside the model directory (:func:`check_local_paths`). Such a venv holds
   only wheels from the index, so it is shared by every model with the same requirements.
2. *Built from source*, only when phase 1 fails because something must be built (a local package, an
   sdist-only release), or at once when cog.yaml has ``build.pre_install``/``build.run`` commands: the
   venv is made again and everything else happens in the model sandbox, as the model's uid, with a
   private uv cache (deleted afterwards; never the shared one), ``--link-mode copy``, network only
   through the egress proxy (``COGPORT_SANDBOX__EGRESS``, plus the hosts of the operator's index
   variables). Afterwards the venv is given back to root, its interpreter links and ``pyvenv.cfg`` are
   restored, and it is keyed by the model too (:meth:`EnvironmentSpec.key` with ``tenant``): a venv
   tenant code wrote is used by that model alone.

Like Docker's python images up to 3.11, a venv for Python 3.11 or older gets setuptools (with
``pkg_resources``, which setuptools 82 dropped) unless the model names setuptools itself: older packages
(librosa 0.10, ...) import ``pkg_resources`` without declaring it, and work on Replicate.

Nothing runs a venv's interpreter on the host once packages are in it: :meth:`Environments.freeze` reads
the ``*.dist-info`` metadata instead of ``uv pip freeze`` (which runs it, and a wheel's ``.pth`` file runs
code at interpreter start-up).

Without the sandbox (``COGPORT_RUNTIME__SANDBOX=off``) there is one phase on the host, building from
source as before, still with the minimal environment and ``--no-config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cogport.build import process
from cogport.build.errors import BuildError
from cogport.build.interpreters import Interpreter
from cogport.build.log import BuildLog
from cogport.runtime.gateway import EgressPolicy, Gateway
from cogport.runtime.sandbox import EGRESS_PORT, Forward, Identity, Sandbox, safe_base_environment
from cogport.settings import SandboxLimits

COMPLETE_MARKER = ".cogport-complete"
LOCK_FILE = "cogport-lock.txt"
"""In a venv built from a lock: the lock it was installed from."""
_REQUIREMENT_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")
_PASSED_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NETRC",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)
"""What of the server's environment uv gets besides ``UV_*`` and ``LC_*`` (uv reads no ``PIP_*`` variable)."""
_UNSAFE_UV_VARIABLES = ("UV_COMPILE_BYTECODE", "UV_CACHE_DIR", "UV_LINK_MODE", "UV_NO_BUILD", "UV_CONFIG_FILE")
"""Set by cogport itself, or dropped: compiling bytecode runs the venv's interpreter."""
_SECRET_SUFFIXES = ("_PASSWORD", "_USERNAME", "_TOKEN", "_KEY", "_SECRET")
_NEEDS_BUILD = (
    "Building source distributions is disabled",
    "building from source is disabled",
    "has no usable wheels",
    "--no-build",
)
"""uv's words when ``--no-build`` stops an install that needs a package built from source."""
_INDEX_VARIABLES = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX", "UV_FIND_LINKS")
_PYPI_HOSTS = {("pypi.org", 443), ("files.pythonhosted.org", 443)}
INSIDE_CACHE = "/var/cache/cogport-uv"
SETUPTOOLS = "setuptools<82"
"""What a venv for Python 3.11 or older gets (see the module docstring): the last releases with ``pkg_resources``."""
SETUPTOOLS_UP_TO = (3, 11)
"""Docker's python images carry setuptools up to this version (not from 3.12 on)."""
"""The private uv cache's path inside a build sandbox."""


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
    """A frozen lock (:meth:`Environments.freeze` of a venv built before): installed as it is, alone
    (``--no-deps``), instead of ``packages`` and ``requirements``. How a node rebuilds a version's venv
    (:mod:`.prepare`)."""

    @property
    def commands(self) -> bool:
        return bool(self.pre_install or self.run)

    def seeds(self, source: Path) -> tuple[str, ...]:
        """What the venv gets besides cog and the model's packages: setuptools up to Python 3.11, unless the
        model's requirements name it (their own version, whatever it is, wins)."""
        if self.interpreter.version[:2] > SETUPTOOLS_UP_TO or self.lock is not None:
            return ()
        if _names_setuptools(self.packages, source, self.requirements):
            return ()
        return (SETUPTOOLS,)

    def key(self, source: Path, tenant: int | None = None) -> str:
        """A short hash of everything that decides the venv's contents; with ``tenant`` (the model), the key
        of a venv tenant code wrote (phase 2), which no other model uses."""
        facts: dict[str, object] = {
            "python": [self.interpreter.text, str(self.interpreter.path)],
            "sdk": self.sdk_version,
            "packages": list(self.packages),
            "requirements": _requirements_digest(source, self.requirements) if self.requirements else None,
            "pre_install": list(self.pre_install),
            "run": list(self.run),
            "env": sorted((k, v) for k, v in self.build_env.items() if k.startswith(("UV_", "PIP_"))),
            # Commands may change the model directory too, so such a venv belongs to one build only.
            "source": str(source) if self.commands else None,
        }
        if self.lock is not None:  # only then: the keys of venvs built without a lock stay as they were
            facts["lock"] = hashlib.sha256(self.lock.encode()).hexdigest()
        if seeds := self.seeds(source):  # only then: the keys of Python 3.12 and newer venvs stay as they were
            facts["seeds"] = list(seeds)
        if tenant is not None:
            facts["tenant"] = tenant
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def _requirement_words(text: str) -> list[list[str]]:
    """The words of each logical line of a requirements file (continuations joined, comments dropped)."""
    lines: list[list[str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((pending + line).split())
        pending = ""
    if pending:
        lines.append(pending.split())
    return lines


def _names_setuptools(packages: tuple[str, ...], source: Path, requirements: str | None) -> bool:
    """Whether the model asks for setuptools itself (in ``python_packages`` or its requirements files)."""
    pattern = re.compile(r"^setuptools(?![\w.-])", re.IGNORECASE)
    if any(pattern.match(package.strip()) for package in packages):
        return True
    if not requirements:
        return False
    return any(
        words and pattern.match(words[0]) for _, lines in _requirement_files(source / requirements) for words in lines
    )


def _requirement_files(first: Path) -> Iterator[tuple[Path, list[list[str]]]]:
    """A requirements file and those it includes (``-r``, ``-c``), each once, with its lines' words."""
    pending, seen = [first], set[Path]()
    while pending:
        path = pending.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        lines = _requirement_words(path.read_text(encoding="utf-8", errors="replace"))
        yield path, lines
        for words in lines:
            for index, word in enumerate(words):
                if word in _REQUIREMENT_FILE_OPTIONS and index + 1 < len(words):
                    pending.append(path.parent / words[index + 1])


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


def _local_candidates(word: str) -> list[str]:
    """The parts of a requirement word that may name a local path (``--opt=path``, ``name @ url``)."""
    parts = [word]
    if word.startswith("-") and "=" in word:
        parts.append(word.split("=", 1)[1])
    if "@" in word:
        parts.append(word.rsplit("@", 1)[1])
    return parts


def _outside(part: str, bases: tuple[Path, ...], root: Path) -> bool:
    """Whether ``part`` names a local path that is not inside ``root`` (relative ones against ``bases``)."""
    if part.startswith("file:"):
        path_text = unquote(urlsplit(part).path)
    elif part.startswith(("/", "~")) or "/../" in f"/{part}/" or part.startswith("../"):
        path_text = os.path.expanduser(part)
    else:
        return False
    real_root = os.path.realpath(root)
    for base in bases:
        resolved = os.path.realpath(os.path.join(base, path_text))
        if resolved != real_root and not resolved.startswith(real_root + os.sep):
            return True
    return False


def check_local_paths(source: Path, requirements: str | None, packages: tuple[str, ...]) -> None:
    """Refuse requirements that name local files outside the model directory (``-r /etc/shadow``, a
    ``file:`` URL, ``--find-links /data``) or environment variables (``${HOME}``): uv reads them as the
    server, and its errors (in the build log) quote what it read."""
    root = source.resolve()

    def check(word: str, where: str, bases: tuple[Path, ...]) -> None:
        if "${" in word:
            raise BuildError(f"{where}: {word!r} uses an environment variable, which builds do not expand")
        for part in _local_candidates(word):
            if _outside(part, bases, root):
                raise BuildError(f"{where}: {word!r} names a file outside the model directory")

    for package in packages:
        for word in package.split():
            check(word, "build.python_packages", (root,))
    if not requirements:
        return
    first = source / requirements
    if _outside(requirements if requirements.startswith("/") else f"./{requirements}", (root,), root):
        raise BuildError(f"build.python_requirements {requirements!r} is outside the model directory")
    for path, lines in _requirement_files(first):
        where = str(path.relative_to(source))
        for words in lines:
            for word in words:
                check(word, where, (root, path.parent))


def uv_environment(environ: Mapping[str, str], *, secrets: bool = True) -> dict[str, str]:
    """What of ``environ`` uv gets: its ``UV_*`` configuration (``secrets=False``: without credentials,
    for a sandboxed build, whose backends see it), proxies, certificates, ``PATH``, ``HOME``, the locale."""
    env: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("UV_"):
            if name in _UNSAFE_UV_VARIABLES:
                continue
            if not secrets and (name.endswith(_SECRET_SUFFIXES) or re.search(r"://[^/@\s]*@", value)):
                continue
            env[name] = value
        elif name in _PASSED_VARIABLES or name.startswith("LC_"):
            env[name] = value
    return env


def _index_hosts(env: Mapping[str, str]) -> frozenset[tuple[str, int]]:
    """The ``(host, port)`` of the package index (PyPI's, or every one the operator's variables name): a
    sandboxed build may always reach them, as phase 1 does, whatever ``COGPORT_SANDBOX__EGRESS`` says."""
    hosts: set[tuple[str, int]] = set()
    if not (env.get("UV_INDEX_URL") or env.get("UV_DEFAULT_INDEX")) and not env.get("UV_NO_INDEX"):
        hosts |= _PYPI_HOSTS
    for name in _INDEX_VARIABLES:
        for word in re.split(r"[\s,]+", env.get(name, "")):
            url = word.split("=", 1)[1] if "=" in word.split("://", 1)[0] else word
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.hostname:
                hosts.add((parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)))
    return frozenset(hosts)


def _local_find_links(env: Mapping[str, str]) -> list[Path]:
    links: list[Path] = []
    for word in re.split(r"[\s,]+", env.get("UV_FIND_LINKS", "")):
        path = Path(unquote(urlsplit(word).path) if word.startswith("file:") else word)
        if word and path.is_absolute() and path.exists():
            links.append(path)
    return links


@dataclass(frozen=True)
class BuildBoundary:
    """Where builds that run package code happen: the model sandbox, its egress policy and limits."""

    sandbox: Sandbox
    egress: str = "public"
    limits: SandboxLimits | None = None


class NeedsBuild(BuildError):
    """Phase 1 could not install everything from wheels: something must be built from source."""


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
        boundary: BuildBoundary | None = None,
    ) -> None:
        self.root = root
        self.prefer_offline = prefer_offline
        self.uv = uv
        self._uv_binary = os.path.realpath(uv)  # bound into build sandboxes
        self.timeout = timeout
        self.boundary = boundary
        # An operator's UV_CACHE_DIR counts as configuration too; the data dir is the fallback.
        operator_cache = os.environ.get("UV_CACHE_DIR")
        self.cache_dir = cache_dir or (Path(operator_cache) if operator_cache else default_cache_dir)

    def uv_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        """uv's environment on the host: :func:`uv_environment` of the server's, ``extra``, the shared cache."""
        env = uv_environment(os.environ)
        env.update({k: v for k, v in extra.items() if k not in _UNSAFE_UV_VARIABLES})
        env["UV_CACHE_DIR"] = str(self.cache_dir)
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")
        env["UV_NO_PROGRESS"] = "1"
        env["NO_COLOR"] = "1"
        return env

    async def ensure(
        self, spec: EnvironmentSpec, source: Path, log: BuildLog, *, allow_commands: bool, tenant: int | None = None
    ) -> Path:
        """The venv for ``spec``, building it first unless a complete one exists. ``tenant``: the model, whose
        sandbox builds what must be built from source (phase 2)."""
        check_local_paths(source, spec.requirements, spec.packages)
        if spec.commands and not allow_commands:  # also checked before the build starts
            raise BuildError("build.run / build.pre_install commands are disabled on this server")
        shared = spec.key(source)
        own = spec.key(source, tenant) if self.boundary is not None and tenant is not None else None
        candidates = [key for key in ((None if spec.commands else shared), own) if key is not None]
        for key in candidates:
            if (self.root / key / COMPLETE_MARKER).exists():
                log.step(f"Using environment {key} (Python {spec.interpreter.text}, cog {spec.sdk_version})")
                return self.root / key
        self.root.mkdir(parents=True, exist_ok=True)
        marker = {"python": spec.interpreter.text, "cog": spec.sdk_version}
        if self.boundary is None:
            build = self._build_on_host(spec, source, self.root / shared, log)
            return await self._locked(shared, log, build, marker)
        if not spec.commands:
            try:
                build = self._install_wheels(spec, source, self.root / shared, log)
                return await self._locked(shared, log, build, marker)
            except NeedsBuild as exc:
                log.line(f"  ({exc.message}: building in the model's sandbox)")
        if own is None:
            raise BuildError("this environment needs packages built from source, which needs the model's sandbox")
        assert tenant is not None
        build = self._build_sandboxed(spec, source, self.root / own, log, tenant)
        return await self._locked(own, log, build, {**marker, "model": tenant})

    async def _locked(
        self, key: str, log: BuildLog, build: Coroutine[None, None, None], marker: Mapping[str, object]
    ) -> Path:
        venv = self.root / key
        try:
            async with file_lock(self.root / f"{key}.lock"):
                if (venv / COMPLETE_MARKER).exists():
                    log.step(f"Using environment {key}, built meanwhile by another push")
                    return venv
                if venv.exists():
                    await asyncio.to_thread(_remove, venv)
                try:
                    await build
                except BaseException:
                    await asyncio.to_thread(_remove, venv)
                    raise
                (venv / COMPLETE_MARKER).write_text(json.dumps(marker))
        finally:
            build.close()  # never awaited when another push built it meanwhile
        return venv

    async def _create(
        self, spec: EnvironmentSpec, source: Path, venv: Path, env: dict[str, str], log: BuildLog
    ) -> None:
        log.step(f"Creating environment {venv.name} with Python {spec.interpreter.text} ({spec.interpreter.path})")
        await process.run(
            [self.uv, "venv", "--no-config", "--python", str(spec.interpreter.path), str(venv)],
            cwd=source,
            env=env,
            log=log,
            time_limit=self.timeout,
            what="creating the virtual environment",
        )

    def _install_argv(self, spec: EnvironmentSpec, source: Path, venv: Path, log: BuildLog) -> list[str]:
        argv = [self.uv, "pip", "install", "--no-config", "--python", str(venv / "bin" / "python")]
        if spec.lock is not None:
            lock = venv / LOCK_FILE
            lock.write_text(spec.lock, encoding="utf-8")
            log.step(f"Installing the locked packages (cog {spec.sdk_version})")
            return [*argv, "--no-deps", "-r", str(lock)]
        seeds = spec.seeds(source)
        argv += [f"cog=={spec.sdk_version}", f"coglet=={spec.sdk_version}", *seeds, *spec.packages]
        if spec.requirements:
            argv += ["-r", spec.requirements]
        extra = " and the model's Python packages" if spec.packages or spec.requirements else ""
        log.step(f"Installing cog {spec.sdk_version}{extra}")
        if seeds:
            log.line(f"  (with {', '.join(seeds)}, as Docker's python images up to 3.11 carry: pkg_resources)")
        return argv

    async def _install_wheels(self, spec: EnvironmentSpec, source: Path, venv: Path, log: BuildLog) -> None:
        """Phase 1: wheels only, on the host, with the shared cache (offline first)."""
        env = self.uv_env(spec.build_env)
        await self._create(spec, source, venv, env, log)
        argv = [*self._install_argv(spec, source, venv, log), "--no-build"]
        if self.prefer_offline:
            if await self._install_offline(argv, source, env, log):
                return
            # A failed attempt installs nothing, but start again from a venv nothing was unpacked into.
            await asyncio.to_thread(_remove, venv)
            await self._create(spec, source, venv, env, BuildLog())
            self._install_argv(spec, source, venv, BuildLog())  # the lock file again, when there is one
        try:
            await process.run(
                argv, cwd=source, env=env, log=log, time_limit=self.timeout, what="installing Python packages"
            )
        except process.CommandFailed as exc:
            if any(words in line for line in exc.tail for words in _NEEDS_BUILD):
                raise NeedsBuild("a package must be built from source") from None
            raise

    async def _build_on_host(self, spec: EnvironmentSpec, source: Path, venv: Path, log: BuildLog) -> None:
        """Without the sandbox: one phase on the host, building from source as needed (as before)."""
        env = self.uv_env(spec.build_env)
        await self._create(spec, source, venv, env, log)
        command_env = {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
        if spec.pre_install:
            await self._commands(spec.pre_install, "build.pre_install", source, command_env, log)
        argv = self._install_argv(spec, source, venv, log)
        if not (self.prefer_offline and await self._install_offline(argv, source, env, log)):
            await process.run(
                argv, cwd=source, env=env, log=log, time_limit=self.timeout, what="installing Python packages"
            )
        if spec.run:
            await self._commands(spec.run, "build.run", source, command_env, log)

    async def _build_sandboxed(
        self, spec: EnvironmentSpec, source: Path, venv: Path, log: BuildLog, tenant: int
    ) -> None:
        """Phase 2: the install (and cog.yaml's commands) in the model's sandbox, as its uid."""
        assert self.boundary is not None
        sandbox, limits = self.boundary.sandbox, self.boundary.limits
        host_env = self.uv_env(spec.build_env)
        await self._create(spec, source, venv, host_env, log)
        links = _interpreter_links(venv)
        private = Path(tempfile.mkdtemp(prefix="cogport-build-"))
        cache = private / "uv-cache"
        cache.mkdir()
        gateway = Gateway(
            private / "sockets",
            EgressPolicy.parse(self.boundary.egress, always=_index_hosts(host_env)),
            "http://127.0.0.1:1",
            upload_url=None,
            on_refusal=lambda line: log.line(f"  egress refused: {line}"),
        )
        gateway.directory.mkdir()
        identity = sandbox.identity(tenant)
        writable: dict[Path, str] = {venv: str(venv), cache: INSIDE_CACHE}
        scratch: Path | None = None
        try:
            if spec.commands:
                writable[source] = str(source)  # commands may change the model directory (their effect is kept)
            else:
                # Builds of local packages write next to them (egg-info, build/): into a scratch copy, dropped.
                scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".cogport-build-", dir=source.parent))
                await asyncio.to_thread(_scratch_copy, source, scratch / "src", identity)
                writable[scratch / "src"] = str(source)
            if identity is not None:
                for path in (venv, cache, *([source] if spec.commands else [])):
                    await asyncio.to_thread(_chown_tree, path, identity.uid, identity.gid)
            await gateway.start()
            inside = sandbox.environment(
                uv_environment(os.environ, secrets=False)
                | safe_base_environment(os.environ)
                | {k: v for k, v in spec.build_env.items() if k not in _UNSAFE_UV_VARIABLES}
                | {
                    "UV_CACHE_DIR": INSIDE_CACHE,
                    "UV_LINK_MODE": "copy",
                    "UV_PYTHON_DOWNLOADS": "never",
                    "UV_NO_PROGRESS": "1",
                    "NO_COLOR": "1",
                    "VIRTUAL_ENV": str(venv),
                    "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                },
                egress=True,
            )
            uv = self._uv_binary
            readonly = [Path(uv), *_local_find_links(host_env)]

            async def run(argv: list[str], what: str) -> None:
                launch = sandbox.command(
                    argv,
                    venv=venv,
                    source=source,
                    tenant=tenant,
                    readonly=readonly,
                    writable=writable,
                    forwards=[Forward("127.0.0.1", EGRESS_PORT, gateway.egress_socket)],
                    limits=limits,
                )
                try:
                    await process.run(
                        launch.argv,
                        cwd=source,
                        env=inside,
                        log=log,
                        time_limit=self.timeout,
                        what=what,
                        pass_fds=launch.pass_fds,
                        limits=limits,
                    )
                finally:
                    launch.close()

            for command in spec.pre_install:
                log.step(f"RUN {command} (in the model's sandbox)")
                await run(["/bin/sh", "-c", command], f"build.pre_install: {command}")
            argv = self._install_argv(spec, source, venv, log)
            argv[0] = uv
            log.line("  (building from source in the model's sandbox, with a private package cache)")
            await run([*argv, "--link-mode", "copy"], "installing Python packages")
            for command in spec.run:
                log.step(f"RUN {command} (in the model's sandbox)")
                await run(["/bin/sh", "-c", command], f"build.run: {command}")
        finally:
            await gateway.close()
            if identity is not None:
                for path in (venv, *([source] if spec.commands else [])):
                    await asyncio.to_thread(_chown_tree, path, 0, 0)
            await asyncio.to_thread(shutil.rmtree, private, True)
            if scratch is not None:
                await asyncio.to_thread(shutil.rmtree, scratch, True)
        await asyncio.to_thread(_restore_interpreter, venv, links)

    async def freeze(self, venv: Path) -> str:
        """The venv's distributions, pinned, as ``uv pip freeze`` prints them (the lock a node installs):
        read from the ``*.dist-info`` metadata, so that no code of the venv runs here."""
        try:
            return await asyncio.to_thread(freeze_site_packages, venv)
        except OSError as exc:
            raise BuildError(f"freezing the environment {venv.name} failed: {exc}") from None

    async def _install_offline(self, argv: list[str], source: Path, env: dict[str, str], log: BuildLog) -> bool:
        """Install from the uv cache alone; False (saying so) when the cache does not hold everything."""
        attempt = BuildLog()
        try:
            await process.run(
                [*argv, "--offline"], cwd=source, env=env, log=attempt, time_limit=self.timeout, what="offline"
            )
        except process.CommandFailed:
            if "--no-build" in argv and _NEEDS_BUILD[0] in attempt.text:  # a local package: no index changes that
                raise NeedsBuild("a package must be built from source") from None
            log.line("  (the uv cache does not hold every package: resolving against the index)")
            return False
        log.line(attempt.text.rstrip("\n"))
        log.line("  (installed from the uv cache, offline)")
        return True

    async def _commands(
        self, commands: tuple[str, ...], where: str, source: Path, env: dict[str, str], log: BuildLog
    ) -> None:
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


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(dist_info: Path) -> tuple[str, str] | None:
    """Name and version from a ``*.dist-info/METADATA`` (its headers only)."""
    name = version = None
    try:
        with (dist_info / "METADATA").open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key == "Name" and name is None:
                    name = value.strip()
                elif key == "Version" and version is None:
                    version = value.strip()
    except FileNotFoundError:
        return None
    return (name, version) if name and version else None


def _direct_url(dist_info: Path) -> tuple[str, bool] | None:
    """A PEP 610 ``direct_url.json`` as the requirement URL uv prints, and whether it is editable."""
    try:
        data = json.loads((dist_info / "direct_url.json").read_text(encoding="utf-8"))
        url = str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    vcs = data.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        url = f"{vcs['vcs']}+{url}" + (f"@{vcs['commit_id']}" if vcs.get("commit_id") else "")
    if data.get("subdirectory"):
        url += f"#subdirectory={data['subdirectory']}"
    editable = isinstance(data.get("dir_info"), dict) and bool(data["dir_info"].get("editable"))
    return url, editable


def freeze_site_packages(venv: Path) -> str:
    """``name==version`` (``name @ url``, ``-e url``) lines of the venv's distributions, sorted by name."""
    entries: dict[str, str] = {}
    for site in sorted(venv.glob("lib/python*/site-packages")) + sorted(venv.glob("lib64/python*/site-packages")):
        for dist_info in sorted(site.glob("*.dist-info")):
            facts = _metadata(dist_info)
            if facts is None:
                continue
            name = _normalize(facts[0])
            direct = _direct_url(dist_info)
            if direct is None:
                line = f"{name}=={facts[1]}"
            else:
                line = f"-e {direct[0]}" if direct[1] else f"{name} @ {direct[0]}"
            entries.setdefault(name, line)
    return "".join(f"{entries[name]}\n" for name in sorted(entries))


def _interpreter_links(venv: Path) -> dict[str, str | bytes]:
    """What ``uv venv`` made that the sandbox's first program depends on: ``pyvenv.cfg`` and ``bin/python*``."""
    saved: dict[str, str | bytes] = {"pyvenv.cfg": (venv / "pyvenv.cfg").read_bytes()}
    for path in (venv / "bin").glob("python*"):
        if path.is_symlink():
            saved[f"bin/{path.name}"] = os.readlink(path)
    return saved


def _restore_interpreter(venv: Path, saved: Mapping[str, str | bytes]) -> None:
    """Put back what :func:`_interpreter_links` saved and remove ``._pth`` files next to the interpreter
    (Python reads them at start-up, even with ``-I -S``): the sandbox starts as root in this venv's python."""
    for path in (venv / "bin").glob("*._pth"):
        _remove(path)
    for relative, content in saved.items():
        path = venv / relative
        if path.is_symlink() or path.exists():
            _remove(path)
        if isinstance(content, bytes):
            path.write_bytes(content)
            os.chmod(path, 0o644)
        else:
            os.symlink(content, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _scratch_copy(source: Path, scratch: Path, identity: Identity | None) -> None:
    """``source`` at ``scratch`` for a build to write in: its directories the tenant's, its files hard links
    where cogport is root (root's: the tenant can add files, never change the model's), copies otherwise."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, scratch, symlinks=True, copy_function=link if identity is not None else shutil.copy2)
    if identity is None:
        return
    for directory, _, _ in os.walk(scratch):
        os.chown(directory, identity.uid, identity.gid)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """``chown -R`` without following links; giving it back to root also clears set-id bits and others'
    write permission (what tenant code made stays readable, never writable, by anyone but root)."""

    def own(path: str, directory: bool) -> None:
        os.lchown(path, uid, gid)
        if uid == 0 and not os.path.islink(path):
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            safe = (mode & ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | 0o022)) | (0o755 if directory else 0o644)
            if safe != mode:
                os.chmod(path, safe)

    own(str(root), True)
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            own(os.path.join(directory, name), True)
        for name in files:
            own(os.path.join(directory, name), False)


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
