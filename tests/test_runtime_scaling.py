"""Autoscaling: the pure policy, and a deployment's instances held by ``ensure`` with real coglet processes
(the minimum up without work and replaced when it dies, more as a queue builds, never above the maximum,
idle extras stopped, all of them idling out at a minimum of 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cogport.backends.local import LocalBackend
from cogport.core.jobs import VersionSpec
from cogport.core.pools import deployment_pool
from cogport.runtime.scaling import Limits, target
from cogport.settings import RuntimeSettings, Settings
from tests.support.runtime import Events, eventually, job, kill_group, spec


def test_the_policy_is_work_per_slot_within_the_limits() -> None:
    assert target(0, 0, 1, Limits(0, 3)) == 0  # nothing to do: zero
    assert target(0, 0, 1, Limits(2, 3)) == 2  # the minimum without work
    assert target(1, 0, 1, Limits(0, 3)) == 1  # the first request from zero
    assert target(5, 1, 1, Limits(0, 3)) == 3  # a queue: as many as needed, never above the maximum
    assert target(3, 2, 4, Limits(0, 5)) == 2  # four slots each
    assert target(0, 4, 4, Limits(1, 5)) == 1
    assert target(7, 0, 1, Limits(0, 0)) == 0  # a maximum of 0 runs nothing


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[LocalBackend] = []

    async def make(**runtime: Any) -> LocalBackend:
        backend = LocalBackend(Settings(data_dir=tmp_path / "data", runtime=RuntimeSettings(**runtime)))
        made.append(backend)
        await backend.start()
        return backend

    yield make
    for backend in made:
        await backend.stop()


def deployed(model: str, name: str = "alice/d") -> VersionSpec:
    base = spec(model)
    return VersionSpec(**{**base.__dict__, "pool": deployment_pool(name)})


def states(backend: LocalBackend, pool: str) -> list[str]:
    return sorted(view.state for view in backend.instances() if view.pool == pool)


async def test_the_minimum_is_kept_up_and_replaced_when_it_dies(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(idle_timeout=0.5, max_instances=8)
    version = deployed("noop")
    backend.ensure(version, 1, 2)
    await eventually(lambda: states(backend, version.pool) == ["idle"])  # started with no work at all
    await asyncio.sleep(1.5)
    assert states(backend, version.pool) == ["idle"]  # the minimum does not idle out
    [first] = [i for i in backend.details() if i.pool == version.pool]
    assert first.pid is not None
    kill_group(first.pid)
    await eventually(lambda: any(i.pid not in (None, first.pid) and i.state.is_live for i in backend.details()))
    await eventually(lambda: states(backend, version.pool) == ["idle"])
    backend.ensure(version, 0, 2)  # offline: it idles out
    await eventually(lambda: states(backend, version.pool) == [], within=10)


async def test_a_queue_adds_instances_up_to_the_maximum_and_they_idle_back(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(idle_timeout=1.0, max_instances=8)
    version = deployed("slow")
    backend.ensure(version, 0, 2)
    runs = [Events() for _ in range(4)]
    for events in runs:
        await backend.submit(job(version, seconds=1.5), events)
    await eventually(lambda: states(backend, version.pool) == ["busy", "busy"], within=30)
    await asyncio.sleep(0.5)
    assert len(states(backend, version.pool)) == 2  # never above the maximum
    finals = [await events.finish() for events in runs]
    assert [f["status"] for f in finals] == ["succeeded"] * 4  # none refused or lost while scaling
    await eventually(lambda: states(backend, version.pool) == [], within=15)  # min 0: back to zero


async def test_lowering_the_maximum_stops_idle_extras_at_once(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(idle_timeout=300, max_instances=8)
    version = deployed("noop")
    backend.ensure(version, 2, 2)
    await eventually(lambda: states(backend, version.pool) == ["idle", "idle"], within=30)
    backend.ensure(version, 1, 1)
    await eventually(lambda: states(backend, version.pool) == ["idle"], within=15)
