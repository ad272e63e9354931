"""The version's OpenAPI schema, made inside the model's venv by ``_schema_script.py``.

Two copies leave here:

* the **stored** one (``Version.openapi_schema``, the API field) marks ``x-cog-streaming`` only on the
  operations whose model really streams (iterator outputs, or ``@cog.streaming``);
* the **runtime** one, ``<source>/.cog/openapi_schema.json``, which coglet reads, carries
  ``"x-cog-streaming": true`` on every ``POST /predictions`` and ``POST /trainings``: coglet refuses SSE
  (406) without it, and cogport streams every prediction through SSE.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogport.build import process
from cogport.build.errors import BuildError
from cogport.build.log import BuildLog
from cogport.runtime.sandbox import RUN_DIR, Launch, Sandbox

RESULT_DIR = f"{RUN_DIR}/out"
"""Where the schema step writes its result inside the sandbox (a host directory of its own)."""

SCRIPT = Path(__file__).with_name("_schema_script.py")
RUNTIME_SCHEMA = Path(".cog") / "openapi_schema.json"
ENDPOINTS = {"predict": "/predictions", "train": "/trainings"}


@dataclass(frozen=True)
class ModelFacts:
    """What introspecting the model found."""

    schema: dict[str, Any]
    streams: dict[str, bool]
    concurrency: int | None
    is_async: bool
    cog_version: str
    python_version: str
    warnings: list[str] = field(default_factory=list)

    def stored_schema(self) -> dict[str, Any]:
        return with_streaming(self.schema, {mode: on for mode, on in self.streams.items() if on})

    def runtime_schema(self) -> dict[str, Any]:
        return with_streaming(self.schema, dict.fromkeys(self.streams, True))


def with_streaming(schema: dict[str, Any], modes: Mapping[str, bool]) -> dict[str, Any]:
    result = copy.deepcopy(schema)
    for mode in modes:
        operation = result.get("paths", {}).get(ENDPOINTS[mode], {}).get("post")
        if operation is not None:
            operation["x-cog-streaming"] = True
    return result


async def inspect_model(
    venv: Path,
    source: Path,
    *,
    predict: str | None,
    train: str | None,
    env: dict[str, str],
    log: BuildLog,
    time_limit: float,
    sandbox: Sandbox | None = None,
    tenant: int = 0,
) -> ModelFacts:
    """Run the generator in ``venv`` with ``source`` as the working directory (as coglet will), in
    ``sandbox`` when given (as ``tenant``'s uid, the model's): importing ``predict.py`` runs the user's
    code. There it sees the script, the venv, the source, a private ``/tmp`` and the one directory it
    writes its result to, with no network at all, and only ``env``."""
    workdir = Path(tempfile.mkdtemp(prefix="cogport-schema-"))
    result_path = workdir / "result.json"
    result_arg = str(result_path) if sandbox is None else f"{RESULT_DIR}/{result_path.name}"
    argv = [str(venv / "bin" / "python"), str(SCRIPT), "--result", result_arg]
    if predict:
        argv += ["--predict", predict]
    if train:
        argv += ["--train", train]
    run_env = {
        **env,
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    launch: Launch | None = None
    if sandbox is not None:
        run_env = sandbox.environment(run_env, egress=False)
        launch = sandbox.command(
            argv, venv=venv, source=source, tenant=tenant, readonly=[SCRIPT], writable={workdir: RESULT_DIR}
        )
        argv = launch.argv
    try:
        try:
            await process.run(
                argv,
                cwd=source,
                env=run_env,
                log=log,
                time_limit=time_limit,
                what="inspecting the model",
                indent="  | ",
                pass_fds=launch.pass_fds if launch else (),
                limits=sandbox.limits if sandbox else None,
            )
        except process.CommandFailed:
            error = _read(result_path).get("error")
            if error:
                raise BuildError(str(error)) from None
            raise
        data = _read(result_path)
    finally:
        if launch is not None:
            launch.close()
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    if "schema" not in data:
        raise BuildError(f"inspecting the model gave no schema: {data.get('error', 'no result')}")
    return ModelFacts(
        schema=data["schema"],
        streams={k: bool(v) for k, v in data.get("streams", {}).items()},
        concurrency=data.get("concurrency"),
        is_async=bool(data.get("is_async")),
        cog_version=str(data.get("cog_version", "")),
        python_version=str(data.get("python_version", "")),
        warnings=[str(w) for w in data.get("warnings", [])],
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_runtime_schema(source: Path, facts: ModelFacts) -> Path:
    path = source / RUNTIME_SCHEMA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts.runtime_schema(), indent=2) + "\n", encoding="utf-8")
    return path
