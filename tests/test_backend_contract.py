"""The Backend protocol (:mod:`cogport.backends.base`, :mod:`cogport.core.jobs`), run against both backends: the
local one (coglet processes on this machine) and the Ray one (a real Ray cluster on this machine, with token
authentication, bound to 127.0.0.1; its node supervisor runs the fixture models from bundles in storage).

What every backend promises the dispatcher: it starts and stops; it reports what it can take (``capacity``,
``has_capacity``, ``waiting``) and what runs (``running``, ``instances``); a job handed over with ``submit``
reports ``started``, ``logs`` and ``output`` in order and ``finished`` exactly once, with one
:class:`~cogport.core.outcome.Outcome`; a crashing or failing model ends ``failed`` with a clear error; a
cancel, even of a model blocked in C code, always ends the job; ``stop`` ends what runs.

Real small Cog models (``tests/fixtures/models``) in the shared cog venv; one Ray cluster for the module.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from ray.cluster_utils import Cluster
from uv import find_uv_bin

from cogport.backends.base import Backend
from cogport.backends.local import LocalBackend
from cogport.backends.raycluster import RayBackend
from cogport.build import bundles
from cogport.build.environment import Environments
from cogport.core.jobs import Job, VersionSpec
from cogport.core.outcome import Outcome
from cogport.core.pools import deployment_of, deployment_pool
from cogport.errors import Conflict, SetupFailed
from cogport.settings import RaySettings, RuntimeSettings, Settings
from cogport.storage.local import LocalStorage
from tests.support.pushing import UV_CACHE
from tests.support.ray import stop_supervisors, token_auth
from tests.support.runtime import FIXTURES, eventually, job, spec
from tests.support.runtime import Events as Recorded

WITHIN = 180.0
"""Seconds a job may take to finish (a Ray node prepares a version's venv before its first start)."""
SETUP_FAILED = "Model setup failed: RuntimeError: weights missing: /nonexistent/weights.bin"
_versions = itertools.count(1)


@dataclass
class Events(Recorded):
    """The recording JobEvents, counting ``finished`` calls (a second one's AssertionError would be raised in
    the backend's task, where the test does not see it)."""

    finished_calls: int = 0

    async def finished(self, job: Job, outcome: Outcome) -> None:
        self.finished_calls += 1
        await super().finished(job, outcome)


@dataclass
class World:
    """One kind of backend, set up once for the module: its settings and (Ray) the cluster it joins."""

    kind: str
    settings: Settings
    root: Path
    """Seen by the models (a sandbox bind): markers and gates."""
    environments: Environments | None = None
    stored: dict[str, str] = field(default_factory=dict)

    def backend(self) -> Backend:
        if self.kind == "ray":
            return RayBackend(self.settings)
        return LocalBackend(self.settings)

    async def spec(self, model: str, **options: Any) -> VersionSpec:
        """A version of the fixture ``model`` of its own (a new pk: no instance of another test serves it);
        on Ray with its bundle in storage, as a push leaves it."""
        version = spec(model, pk=next(_versions), **options)
        if self.environments is None:
            return version
        source = self.root / "sources" / model
        if not source.exists():  # the fixture as published: its schema, and a cog.yaml
            shutil.copytree(FIXTURES / model, source, ignore=shutil.ignore_patterns("__pycache__"))
            python = f"{sys.version_info.major}.{sys.version_info.minor}"
            (source / "cog.yaml").write_text(f'build:\n  python_version: "{python}"\npredict: "{version.ref}"\n')
        storage = LocalStorage(self.settings.data_dir / "files")  # what the node reads (one machine)
        key = await bundles.store(
            storage, version.version_id, source, Path(version.venv_path), self.environments, self.settings
        )
        return replace(version, source_path=str(source), bundle_key=key)


def _runtime(root: Path) -> RuntimeSettings:
    # cancel_grace: a model blocked in C is killed 1 s after a cancel; idle instances of earlier tests
    # (Ray's node supervisor outlives each test's backend) go after 5 s
    return RuntimeSettings(sandbox_binds=[root], setup_attempts=1, cancel_grace=1.0, idle_timeout=5.0)


@pytest.fixture(scope="module", params=["local", pytest.param("ray", marks=pytest.mark.xdist_group("ray-cluster"))])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp(f"contract-{request.param}")
    root.chmod(0o777)  # models run as uids of their own
    settings = Settings(data_dir=root / "data", detect_gpus=False, runtime=_runtime(root))
    if request.param == "local":
        yield World("local", settings, root)
        return
    yield from _ray_world(root, settings, tmp_path_factory.mktemp("ray-auth"))


def _ray_world(root: Path, settings: Settings, auth: Path) -> Iterator[World]:
    """A head node only (no GPU, one CPU), with token authentication; its supervisor builds venvs from the
    suite's shared uv cache."""
    import ray

    with token_auth(auth):
        env = {"COGPORT_GPUS": "[]", "COGPORT_BUILD__UV_CACHE_DIR": str(UV_CACHE)}
        head = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False, "env_vars": env}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        namespace = f"cogport-contract-{time.monotonic_ns()}"
        settings.backend = "ray"
        settings.ray = RaySettings(address=str(cluster.address), namespace=namespace)
        environments = Environments(
            root / "venvs", uv=find_uv_bin(), cache_dir=UV_CACHE, default_cache_dir=root / "uv", timeout=600
        )
        try:
            yield World("ray", settings, root, environments)
        finally:
            if ray.is_initialized():
                stop_supervisors(namespace)
            ray.shutdown()
            cluster.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture
async def backend(world: World) -> AsyncIterator[Backend]:
    made = world.backend()
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def run(backend: Backend, version: VersionSpec, **inputs: Any) -> tuple[Events, dict[str, Any]]:
    events = Events()
    await backend.submit(job(version, **inputs), events)
    return events, await events.finish(WITHIN)


# --- start, capacity, hardware -------------------------------------------------------------------


async def test_a_started_backend_reports_what_it_can_run(world: World, backend: Backend) -> None:
    skus = [sku.sku for sku in backend.hardware()]
    assert skus[0] == "cpu"
    assert backend.running() == set()
    version = await world.spec("hello")
    await eventually(lambda: backend.has_capacity(version))  # Ray reads a spec's capacity once asked
    capacity = backend.capacity(version)
    assert capacity.free >= 1 and capacity.refused is None
    assert backend.waiting(version) == 0
    assert not [view for view in backend.instances() if view.key == version.key]  # nothing started for it


async def test_hardware_it_lacks_is_refused_with_a_reason(world: World, backend: Backend) -> None:
    version = await world.spec("hello", hardware="gpu-h100")
    await eventually(lambda: backend.capacity(version).refused is not None)
    assert not backend.has_capacity(version)
    assert "gpu-h100" in str(backend.capacity(version).refused)


# --- a job -----------------------------------------------------------------------------------------


async def test_a_job_reports_in_order_and_finishes_once(world: World, backend: Backend) -> None:
    version = await world.spec("hello")
    events = Events()
    the_job = job(version, text="ada")
    await backend.submit(the_job, events)
    assert the_job.prediction_id in backend.running()  # handed over: running from now on

    final = await events.finish(WITHIN)

    assert final["status"] == "succeeded" and final["output"] == "hello ada" and final["error"] is None
    assert events.names[0] == "started" and events.names[-1] == "finished"
    assert set(events.names[1:-1]) <= {"logs"}
    assert "greeting ada" in events.log_text
    await eventually(lambda: the_job.prediction_id not in backend.running())
    assert events.finished_calls == 1


async def test_instances_are_shown_as_views(world: World, backend: Backend) -> None:
    version = await world.spec("hello")
    _, final = await run(backend, version, text="x")
    assert final["status"] == "succeeded"

    def idle() -> list[Any]:
        return [view for view in backend.instances() if view.key == version.key and view.state == "idle"]

    await eventually(lambda: bool(idle()))  # Ray: at the next read of the node's state
    [view] = idle()
    assert view.pool == "" and view.hardware == "cpu" and view.gpus == ()
    assert view.id and view.node
    assert isinstance(view.started_at, datetime) and view.started_at.tzinfo is not None


async def test_a_job_id_is_taken_once(world: World, backend: Backend) -> None:
    version = await world.spec("slow")
    the_job = job(version, seconds=60)
    events = Events()
    await backend.submit(the_job, events)
    with pytest.raises(Conflict):
        await backend.submit(the_job, Events())
    assert await backend.cancel(the_job.prediction_id)
    assert (await events.finish(WITHIN))["status"] == "canceled"
    assert events.finished_calls == 1


async def test_iterator_outputs_grow_to_the_final_output(world: World, backend: Backend) -> None:
    events, final = await run(backend, await world.spec("iterator"), count=3)
    assert final["status"] == "succeeded"
    assert final["output"] == ["token0 ", "token1 ", "token2 "]
    outputs = [value for name, value in events.calls if name == "output"]
    assert outputs, events.names
    for output in outputs:
        assert output == final["output"][: len(output)]  # the whole list so far, each time


async def test_a_training_runs_in_train_mode(world: World, backend: Backend) -> None:
    events, final = await run(backend, await world.spec("trainer"), steps=2)
    assert final["status"] == "succeeded", final
    assert final["output"] == {"weights": "weights after 2 steps"}
    assert "step 1" in (final["logs"] or events.log_text)


# --- failures ------------------------------------------------------------------------------------


async def test_a_crashing_model_fails_the_job_with_a_clear_error(world: World, backend: Backend) -> None:
    events, final = await run(backend, await world.spec("crash"), crash=True)
    assert final["status"] == "failed"
    assert final["error"].startswith("The model crashed (exit code -9)"), final["error"]
    assert "started" in events.names and events.finished_calls == 1


async def test_a_failing_setup_fails_the_job_and_refuses_the_version(world: World, backend: Backend) -> None:
    version = await world.spec("setup_fail")
    events, final = await run(backend, version)
    assert final["status"] == "failed" and final["error"] == SETUP_FAILED
    assert "started" not in events.names and events.finished_calls == 1

    await eventually(lambda: backend.capacity(version).refused == SETUP_FAILED)  # a value: queued work fails with it
    assert not backend.has_capacity(version)
    # a job handed over anyway is refused: at once (local), or it ends failed with the reason (Ray's node)
    later = Events()
    try:
        await backend.submit(job(version), later)
    except SetupFailed as refused:
        assert refused.detail == SETUP_FAILED
    else:
        final = await later.finish(WITHIN)
        assert final["status"] == "failed" and final["error"] == SETUP_FAILED


# --- cancel and stop always end ---------------------------------------------------------------------


async def test_cancel_a_running_and_a_waiting_job(world: World, backend: Backend) -> None:
    version = await world.spec("slow")  # one instance per version: the second job waits for the first
    marker = world.root / f"stopped-{version.version_id}"
    running, waiting = Events(), Events()
    running_job, waiting_job = job(version, seconds=120, marker=str(marker)), job(version, seconds=0)
    await backend.submit(running_job, running)
    await running.wait_until(lambda e: "sleeping" in e.log_text, WITHIN)
    await backend.submit(waiting_job, waiting)
    assert backend.running() >= {running_job.prediction_id, waiting_job.prediction_id}
    assert backend.waiting(version) == 1

    assert await backend.cancel(waiting_job.prediction_id)
    assert (await waiting.finish(WITHIN))["status"] == "canceled"
    assert waiting.names == ["finished"]  # it never started
    assert await backend.cancel(running_job.prediction_id)
    final = await running.finish(WITHIN)
    assert final["status"] == "canceled" and final["error"] is None
    assert marker.read_text() == "stopped"  # the model was stopped, not left running

    await eventually(lambda: not backend.running() & {running_job.prediction_id, waiting_job.prediction_id})
    assert backend.waiting(version) == 0
    assert running.finished_calls == waiting.finished_calls == 1
    assert not await backend.cancel("rt-unknown")


async def test_cancel_ends_a_model_blocked_in_c(world: World, backend: Backend) -> None:
    """coglet's cancel never fires in a C call: the backend kills the instance after ``cancel_grace``."""
    events = Events()
    blocked = job(await world.spec("hang"))
    await backend.submit(blocked, events)
    await events.wait_until(lambda e: "blocking" in e.log_text, WITHIN)
    assert await backend.cancel(blocked.prediction_id)
    final = await events.finish(WITHIN)
    assert final["status"] == "canceled" and events.finished_calls == 1
    await eventually(lambda: blocked.prediction_id not in backend.running())


async def test_stop_ends_what_runs(world: World) -> None:
    backend = world.backend()
    await backend.start()
    events = Events()
    try:
        await backend.submit(job(await world.spec("slow"), seconds=120), events)
        await events.wait_until(lambda e: "sleeping" in e.log_text, WITHIN)
    finally:
        await backend.stop()
    final = await events.finish(WITHIN)
    assert final["status"] == "failed" and "interrupted" in final["error"], final
    assert backend.running() == set() and events.finished_calls == 1


# --- deployments ---------------------------------------------------------------------------------


async def test_ensure_holds_instances_without_work(world: World, backend: Backend) -> None:
    version = replace(await world.spec("hello"), pool=deployment_pool("admin/contract"))

    def idle() -> list[Any]:
        return [view for view in backend.instances() if view.key == version.key and view.state == "idle"]

    backend.ensure(version, 1, 1)
    await eventually(lambda: bool(idle()), WITHIN)
    [view] = idle()
    assert deployment_of(view.pool) == "admin/contract"
    _, final = await run(backend, version, text="pool")
    assert final["output"] == "hello pool"
    await eventually(lambda: [held.id for held in idle()] == [view.id])  # the instance held up served it

    backend.ensure(version, 0, 0)  # let it go: it idles out
    await eventually(lambda: not [v for v in backend.instances() if v.key == version.key], WITHIN)
