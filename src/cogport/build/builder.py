"""One build: a staged model directory in, the fields of a new version out (or a :class:`BuildError`).

Steps, each a headline in the build log: read ``cog.yaml`` → check refs, build commands and system
packages → pick a host Python → get the shared venv (:mod:`.environment`) → introspect the model and
write its schema (:mod:`.schema`). Nothing here touches the database; :mod:`cogport.services.builder`
queues builds and turns results into versions.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import uv

from cogport.build import host_packages, interpreters, packing
from cogport.build.environment import BuildBoundary, Environments, EnvironmentSpec
from cogport.build.errors import BuildError
from cogport.build.log import BuildLog
from cogport.build.schema import inspect_model, write_runtime_schema
from cogport.runtime.sandbox import Sandbox, safe_base_environment
from cogport.settings import Settings

if TYPE_CHECKING:
    from cogport.build import cogyaml

DEFAULT_PYTHON = "3.13"
"""Used, with a warning, when cog.yaml names no python_version (Cog's default before it became required)."""
MINIMUM_SDK = (0, 17, 0)
_SDK_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)((a|b|rc)\d+|\.dev\d+|\.post\d+)?$")


@dataclass(frozen=True)
class Staged:
    """A pushed directory, unpacked and filtered: its content id, or why it cannot be built."""

    source: Path
    content_id: str
    error: str | None = None

    def version_id(self, model_id: int, model_ref: str) -> str:
        """The id of the version these files make in the model ``model_ref`` (``owner/name``)."""
        return packing.version_id(self.content_id, model_id, model_ref)


def sdk_version(config: cogyaml.CogConfig | None, settings: Settings) -> str:
    wanted = (config.build.sdk_version if config else None) or settings.build.cog_version
    match = _SDK_VERSION.match(wanted)
    if not match:
        raise BuildError(f"build.sdk_version {wanted!r} is not a cog version such as '0.23.1'")
    if tuple(int(part) for part in match.groups()[:3]) < MINIMUM_SDK:
        raise BuildError(
            f"build.sdk_version {wanted} is not supported: cogport runs models with coglet, which comes with "
            "cog 0.17.0 and newer. Remove sdk_version or set it to 0.17.0 or newer."
        )
    return wanted


def stage(archive: BinaryIO, dest: Path, settings: Settings) -> Staged:
    """Unpack an upload into ``dest``, apply the ignore rules, and compute the content id (blocking)."""
    packing.unpack(archive, dest, max_bytes=settings.build.max_source_mb << 20)
    files = packing.remove_ignored(dest)
    from cogport.build import cogyaml  # here, not at the top: PyYAML is not imported at the server's start

    error: str | None = None
    config = None
    cog_yaml = dest / "cog.yaml"
    if not cog_yaml.is_file():
        error = "the pushed directory has no cog.yaml at its top"
    else:
        try:
            config = cogyaml.parse(cog_yaml.read_text(encoding="utf-8", errors="replace"))
            sdk = sdk_version(config, settings)
        except BuildError as exc:
            error = exc.message
    if error is not None:
        sdk = settings.build.cog_version
    return Staged(source=dest, content_id=packing.content_id(dest, files, sdk), error=error)


class ModelBuilder:
    """Builds staged model directories; holds what builds share (the venvs, the uv cache)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.environments = Environments(
            settings.build.venvs_dir or settings.data_dir / "venvs",
            uv=uv.find_uv_bin(),
            cache_dir=settings.build.uv_cache_dir,
            default_cache_dir=settings.data_dir / "cache" / "uv",
            timeout=settings.build.timeout,
            prefer_offline=settings.build.prefer_offline,
            boundary=build_boundary(settings),
        )

    async def build(self, source: Path, log: BuildLog, *, tenant: int = 0) -> dict[str, Any]:
        """Build ``source`` in place; returns the new version's fields (without ``id``)."""
        from cogport.build import cogyaml  # here, not at the top: PyYAML is not imported at the server's start

        build = self.settings.build
        log.step("Reading cog.yaml")
        config = cogyaml.parse((source / "cog.yaml").read_text(encoding="utf-8", errors="replace"))
        for warning in config.warnings:
            log.line(f"  warning: {warning}")
        sdk = sdk_version(config, self.settings)
        self._check_refs(source, config)
        commands = [*config.build.pre_install, *config.build.run]
        if commands and not build.allow_run_commands:
            raise BuildError(
                "cog.yaml has build.run / build.pre_install commands, which this server does not run (they would "
                "change the host, as there is no container). Remove them, or ask the operator to set "
                "COGPORT_BUILD__ALLOW_RUN_COMMANDS=true. Commands: " + "; ".join(commands)
            )
        await self._check_system_packages(config, log)
        interpreter = await self._interpreter(config, log)
        if config.build.python_requirements and not (source / config.build.python_requirements).is_file():
            raise BuildError(
                f"build.python_requirements names {config.build.python_requirements}, which does not exist"
            )
        spec = EnvironmentSpec(
            interpreter=interpreter,
            sdk_version=sdk,
            packages=config.build.python_packages,
            requirements=config.build.python_requirements,
            pre_install=config.build.pre_install,
            run=config.build.run,
            build_env=config.environment,
        )
        venv = await self.environments.ensure(spec, source, log, allow_commands=build.allow_run_commands, tenant=tenant)
        log.step(f"Inspecting {' and '.join(r for r in (config.predict, config.train) if r)}")
        runtime = self.settings.runtime
        sandbox = Sandbox.configured(runtime, self.settings.sandbox) if runtime.sandbox else None
        # Unsandboxed (the operator's choice), the schema step keeps the server's environment, as before.
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | dict(config.environment)
        facts = await inspect_model(
            venv,
            source,
            predict=config.predict,
            train=config.train,
            # Sandboxed, the user's code gets the locale and its cog.yaml environment, nothing of the server's.
            env=env if sandbox is None else safe_base_environment(env) | dict(config.environment),
            log=log,
            time_limit=build.timeout,
            sandbox=sandbox,
            tenant=tenant,
        )
        for warning in facts.warnings:
            log.line(f"  warning: {warning}")
        concurrency = config.concurrency or facts.concurrency or 1
        if concurrency > 1 and not facts.is_async:
            raise BuildError(
                f"concurrency {concurrency} needs an async run()/predict() (`async def`); make it async or set "
                "concurrency.max to 1"
            )
        write_runtime_schema(source, facts)
        streaming = ", streams output" if any(facts.streams.values()) else ""
        log.step(f"Schema written (cog {facts.cog_version}, Python {facts.python_version}{streaming})")
        return {
            "cog_version": facts.cog_version or sdk,
            "openapi_schema": facts.stored_schema(),
            "python_version": facts.python_version or interpreter.text,
            "predict_ref": config.predict,
            "train_ref": config.train,
            "concurrency": concurrency,
            "environment": dict(config.environment),
            "gpu": config.build.gpu,
            "source_path": str(source),
            "venv_path": str(venv),
        }

    @staticmethod
    def _check_refs(source: Path, config: cogyaml.CogConfig) -> None:
        if not config.predict:
            raise BuildError('cog.yaml has no predict entry (e.g. predict: "predict.py:Predictor")')
        for key, ref in (("predict", config.predict), ("train", config.train)):
            if ref and not (source / ref.split(":", 1)[0]).is_file():
                raise BuildError(f"{key}: {ref} in cog.yaml names {ref.split(':', 1)[0]}, which does not exist")

    async def _check_system_packages(self, config: cogyaml.CogConfig, log: BuildLog) -> None:
        wanted = config.build.system_packages
        if not wanted:
            return
        log.step(f"Checking system packages: {', '.join(wanted)}")
        missing = await host_packages.missing(wanted)
        if missing is None:
            log.line("  warning: this host has no dpkg, so build.system_packages cannot be checked")
        elif missing:
            raise BuildError(
                f"build.system_packages not installed on this server: {', '.join(missing)}. cogport does not install "
                f"system packages per model; ask the operator to install them (apt-get install {' '.join(missing)}) "
                "or remove them from cog.yaml."
            )

    async def _interpreter(self, config: cogyaml.CogConfig, log: BuildLog) -> interpreters.Interpreter:
        wanted = config.build.python_version
        if wanted is None:
            wanted = DEFAULT_PYTHON
            log.line(f"  warning: cog.yaml sets no build.python_version; using {DEFAULT_PYTHON}")
        interpreter, warning = await asyncio.to_thread(
            interpreters.find, wanted, self.settings.build.python_search_paths, self.environments.uv
        )
        if warning:
            log.line(f"  warning: {warning}")
        return interpreter


def build_boundary(settings: Settings) -> BuildBoundary | None:
    """Where builds run package code (phase 2 of :mod:`.environment`): the model sandbox, unless it is off."""
    if not settings.runtime.sandbox:
        return None
    return BuildBoundary(
        Sandbox.configured(settings.runtime, settings.sandbox),
        egress=settings.sandbox.egress,
        limits=settings.sandbox.limits_for("cpu"),
    )


def final_source_path(settings: Settings, content_id: str) -> Path:
    """Where a build's files end up: keyed by content, so models pushed the same files share them.

    (Versions made before version ids included the model have ``id == content id``: the same place.)
    """
    return settings.data_dir / "versions" / content_id / "src"


def publish_source(staged: Path, final: Path) -> Path:
    """Move a built directory to its content-addressed home; if another build got there first, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, final)
    except OSError:
        if not final.is_dir():
            raise
    return final
