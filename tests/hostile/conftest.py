"""Hostile models (``tests/hostile/models``): real coglet instances whose code tries an escape of the security
review (issue 17), each test asserting the attempt failed and, where it can, that the prediction itself ran.

The models return what they found as JSON. Every model takes one input, ``arg`` (a string), except
``bigfile``; their runtime schemas (``.cog/openapi_schema.json``) were written by cogport's own schema step.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cogport.backends.local import LocalBackend
from cogport.core.jobs import VersionSpec
from cogport.settings import RuntimeSettings, SandboxSettings, Settings
from tests.support.runtime import Events, cog_venv, group_alive, job

MODELS = Path(__file__).resolve().parent / "models"
ROOT = os.geteuid() == 0
UID_BASE = SandboxSettings().uid_base


def hostile(model: str, *, pk: int = 1, tenant: int = 1, hardware: str = "cpu") -> VersionSpec:
    """A spec for ``tests/hostile/models/<model>``, of model (tenant) id ``tenant``."""
    return VersionSpec(
        version_pk=pk,
        version_id=f"{model}{pk:04d}{'0' * 8}",
        mode="predict",
        source_path=str(MODELS / model),
        venv_path=str(cog_venv()),
        ref="predict.py:Runner",
        hardware=hardware,
        tenant=tenant,
    )


async def predict(backend: LocalBackend, version: VersionSpec, within: float = 120.0, **inputs: Any) -> dict[str, Any]:
    events = Events()
    await backend.submit(job(version, **inputs), events)
    return await events.finish(within)


def found(final: dict[str, Any]) -> dict[str, Any]:
    """What a hostile model reported (its prediction succeeded: its code ran)."""
    assert final["status"] == "succeeded", final
    result: dict[str, Any] = json.loads(final["output"])
    return result


MakeBackend = Callable[..., Any]


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[MakeBackend]:
    """Started sandboxed backends (``sandbox``: the ``COGPORT_SANDBOX__*`` settings; ``base``: settings to start
    from, e.g. a live server's); stopped at the end, and checked for processes left behind."""
    made: list[LocalBackend] = []

    async def make(
        sandbox: SandboxSettings | None = None, *, base: Settings | None = None, upload_url: str | None = None
    ) -> LocalBackend:
        settings = base or Settings(data_dir=tmp_path / "data", runtime=RuntimeSettings())
        settings = settings.model_copy(update={"sandbox": sandbox or SandboxSettings(), "detect_gpus": False})
        backend = LocalBackend(settings, upload_url=upload_url)
        made.append(backend)
        await backend.start()
        return backend

    yield make
    for backend in made:
        pgids = [i.pid for i in backend.details() if i.pid is not None]
        await backend.stop()
        for pgid in pgids:
            assert group_alive(pgid) == [], f"process group {pgid} outlived the backend"
