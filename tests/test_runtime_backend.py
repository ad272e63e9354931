"""The LocalBackend (and its pool) with real coglet processes: slots, restarts, idle stops, capacity."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cogport.backends.base import Backend
from cogport.backends.local import LocalBackend
from cogport.core.jobs import VersionSpec
from cogport.errors import BackendUnavailable, Conflict, SetupFailed
from cogport.runtime.state import InstanceState
from cogport.settings import RuntimeSettings, Settings
from tests.support.runtime import Events, eventually, group_alive, is_dir, job, prediction_dir, spec


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Started backends with the given runtime settings; stopped (and checked for leftovers) at the end."""
    made: list[LocalBackend] = []

    async def make(**runtime: Any) -> LocalBackend:
        # Sandboxed, seeing tmp_path (markers, gates, counters).
        runtime = {"sandbox_binds": [tmp_path], **runtime}
        os.chmod(tmp_path, 0o777)  # models run as uids of their own
        settings = Settings(data_dir=tmp_path / "data", runtime=RuntimeSettings(**runtime))
        backend = LocalBackend(settings)
        made.append(backend)
        await backend.start()
        return backend

    yield make
    for backend in made:
        pgids = [i.pid for i in backend.details() if i.pid is not None]
        await backend.stop()
        for pgid in pgids:
            assert group_alive(pgid) == [], f"process group {pgid} outlived the backend"


def live(backend: LocalBackend, key: str | None = None) -> list[Any]:
    return [i for i in backend.details() if i.state.is_live and (key is None or i.key == key)]


async def predict(backend: LocalBackend, version: VersionSpec, **inputs: Any) -> dict[str, Any]:
    events = Events()
    await backend.submit(job(version, **inputs), events)
    return await events.finish()


def test_local_backend_is_a_backend() -> None:
    def accepts(backend: Backend) -> Backend:
        return backend

    accepts(LocalBackend(Settings()))


async def test_a_prediction_from_cold(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend()
    version = spec("hello")
    assert backend.has_capacity(version)
    events = Events()
    the_job = job(version, text="ada")

    await backend.submit(the_job, events)
    assert backend.running() == {the_job.prediction_id}  # waiting for the cold start counts
    final = await events.finish()

    assert final["status"] == "succeeded" and final["output"] == "hello ada"
    assert events.names == ["started", "logs", "finished"]
    await eventually(lambda: backend.running() == set())
    [instance] = backend.details()
    [live] = [i for group in backend.pool._groups.values() for i in group.instances]
    await eventually(lambda: not prediction_dir(the_job.prediction_id, live.process).exists())  # swept in 1 s
    assert instance.state is InstanceState.READY and instance.ready_after is not None
    # Warm now: the next one reuses the instance.
    assert (await predict(backend, version, text="bo"))["output"] == "hello bo"
    assert [i.pid for i in backend.details()] == [instance.pid]


async def test_submit_errors(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend()
    version = spec("slow")
    the_job = job(version, seconds=60)
    await backend.submit(the_job, Events())
    with pytest.raises(Conflict):
        await backend.submit(the_job, Events())
    await backend.stop()
    with pytest.raises(BackendUnavailable):
        await backend.submit(job(version), Events())
    assert not backend.has_capacity(version)


async def test_a_crash_fails_the_prediction_and_the_instance_is_replaced(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend()
    version = spec("crash")
    assert (await predict(backend, version, crash=False))["output"] == "survived"
    [first] = backend.details()

    final = await predict(backend, version, crash=True)

    assert final["status"] == "failed"
    assert final["error"].startswith("The model crashed (exit code -9)"), final["error"]
    await eventually(lambda: group_alive(first.pid) == [])
    await eventually(lambda: len(live(backend)) == 1 and live(backend)[0].state is InstanceState.READY)
    [replacement] = live(backend)
    assert replacement.pid != first.pid
    assert (await predict(backend, version, crash=False))["output"] == "survived"


@pytest.mark.parametrize("victim", ["worker", "server"])
async def test_an_instance_that_dies_while_idle_is_noticed(make_backend: Callable[..., Any], victim: str) -> None:
    backend: LocalBackend = await make_backend()
    version = spec("hello")
    await predict(backend, version, text="a")
    [before] = backend.details()
    assert before.pid is not None
    worker = next(p for p in group_alive(before.pid) if p != before.pid)
    os.kill(worker if victim == "worker" else before.pid, signal.SIGKILL)

    # A dead server is noticed at once; a dead worker leaves coglet UNHEALTHY, seen by the next health check.
    await eventually(lambda: backend.details() == [])
    assert group_alive(before.pid) == []
    assert (await predict(backend, version, text="b"))["output"] == "hello b"


async def test_repeated_setup_failure_fails_the_work_and_refuses_the_version(
    make_backend: Callable[..., Any],
) -> None:
    backend: LocalBackend = await make_backend(setup_attempts=2, start_backoff_initial=0.05, start_backoff_max=60)
    version = spec("setup_fail")
    assert backend.has_capacity(version)
    eventses = [Events(), Events()]
    for events in eventses:
        await backend.submit(job(version), events)

    for events in eventses:
        final = await events.finish()
        assert final["status"] == "failed"
        assert final["error"] == "Model setup failed: RuntimeError: weights missing: /nonexistent/weights.bin"
        assert "started" not in events.names
    refused = backend.capacity(version)  # a value, not an exception: the queued work fails with it
    assert not backend.has_capacity(version) and refused.free == 0
    assert refused.refused == "Model setup failed: RuntimeError: weights missing: /nonexistent/weights.bin"
    with pytest.raises(SetupFailed):
        await backend.submit(job(version), Events())
    assert backend.has_capacity(spec("hello", pk=2))  # other versions are not affected
    await eventually(lambda: backend.details() == [])


async def test_a_failed_start_is_retried_with_backoff(make_backend: Callable[..., Any], tmp_path: Path) -> None:
    backend: LocalBackend = await make_backend(setup_attempts=3, start_backoff_initial=0.05)
    counter = tmp_path / "attempts"
    version = spec("flaky_setup", environment={"FLAKY_COUNTER": str(counter), "FLAKY_FAILURES": "2"})

    final = await predict(backend, version)

    assert final["status"] == "succeeded" and final["output"] == "ok"
    assert counter.read_text() == "3"  # two failed starts, then one that worked
    assert backend.has_capacity(version)


async def test_failed_scale_out_does_not_refuse_a_serving_version(
    make_backend: Callable[..., Any], tmp_path: Path
) -> None:
    backend: LocalBackend = await make_backend(
        setup_attempts=1, start_backoff_initial=30, start_backoff_max=60, max_instances_per_version=2
    )
    broken = tmp_path / "broken"
    env = {"FLAKY_COUNTER": str(tmp_path / "attempts"), "FLAKY_BREAK": str(broken)}
    version = spec("flaky_setup", environment=env)
    first, second = Events(), Events()
    first_job = job(version, seconds=120)
    await backend.submit(first_job, first)
    await first.wait_until(lambda e: "started" in e.names)
    broken.touch()  # every further start of the version fails

    await backend.submit(job(version), second)  # needs a second instance, which fails to start
    await eventually(lambda: (tmp_path / "attempts").read_text() == "2")
    assert backend.has_capacity(version) is False  # backing off, but not refused (no SetupFailed)

    await backend.cancel(first_job.prediction_id)
    assert (await first.finish())["status"] == "canceled"
    assert (await second.finish())["status"] == "succeeded"  # served by the instance that was up


async def test_setup_hang_fails_after_the_timeout(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(setup_timeout=1, setup_attempts=1)
    version = spec("setup_hang")
    events = Events()
    await backend.submit(job(version), events)
    final = await events.finish()
    assert final["status"] == "failed"
    assert final["error"] == "Model setup timed out after 1 seconds"
    assert "setup is hanging" in final["logs"]
    assert backend.capacity(version).refused == "Model setup timed out after 1 seconds"


async def test_concurrency_4_runs_four_predictions_at_once(make_backend: Callable[..., Any], tmp_path: Path) -> None:
    backend: LocalBackend = await make_backend()
    version = spec("concurrent", concurrency=4)
    eventses = [Events() for _ in range(4)]
    for n, events in enumerate(eventses):
        assert backend.has_capacity(version)
        await backend.submit(job(version, name=f"p{n}", rendezvous=str(tmp_path), parties=4), events)
    assert not backend.has_capacity(version)  # four slots, all spoken for; only one start at a time

    finals = [await events.finish() for events in eventses]

    # Each prediction waits until all four have arrived: they can only finish if they ran together.
    assert sorted(f["output"] for f in finals) == [f"p{n} met 3 others" for n in range(4)]
    assert len(backend.details()) == 1


async def test_jobs_wait_for_a_slot_and_run_in_order(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(max_instances=1)
    version = spec("hello")
    eventses = [Events() for _ in range(5)]
    for n, events in enumerate(eventses):
        await backend.submit(job(version, text=str(n)), events)
    finals = [await events.finish() for events in eventses]
    assert [f["output"] for f in finals] == [f"hello {n}" for n in range(5)]
    assert len(backend.details()) == 1


async def test_cancel_a_running_and_a_waiting_prediction(make_backend: Callable[..., Any], tmp_path: Path) -> None:
    backend: LocalBackend = await make_backend(max_instances=1)
    version = spec("slow")
    marker = tmp_path / "stopped"
    running, waiting = Events(), Events()
    seen_at_finish: list[bool] = []
    running.on_finished = lambda: seen_at_finish.append(marker.exists())
    running_job = job(version, seconds=120, marker=str(marker))
    waiting_job = job(version, seconds=0)
    await backend.submit(running_job, running)
    await backend.submit(waiting_job, waiting)
    await running.wait_until(lambda e: "sleeping" in e.log_text)

    assert await backend.cancel(waiting_job.prediction_id)
    assert (await waiting.finish())["status"] == "canceled"
    assert waiting.names == ["finished"]

    assert await backend.cancel(running_job.prediction_id)
    assert (await running.finish())["status"] == "canceled"
    assert seen_at_finish == [True]
    assert not await backend.cancel(running_job.prediction_id) or running_job.prediction_id in backend.running()
    await eventually(lambda: backend.running() == set())
    assert not await backend.cancel("rt-unknown")


async def test_idle_instances_are_stopped(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(idle_timeout=0.5)
    version = spec("noop")
    assert (await predict(backend, version))["status"] == "succeeded"
    [instance] = backend.details()
    assert instance.pid is not None
    await eventually(lambda: backend.details() == [])
    assert group_alive(instance.pid) == []
    assert (await predict(backend, version))["status"] == "succeeded"  # started again on demand


async def test_max_instances_evicts_the_least_recently_used_idle_instance(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(max_instances=2)
    first, second, third = spec("hello", pk=1), spec("noop", pk=2), spec("hello", pk=3)
    await predict(backend, first, text="a")
    await predict(backend, second)
    await predict(backend, first, text="b")  # now `second` is the least recently used
    assert {i.key for i in backend.details()} == {first.key, second.key}
    [evicted] = [i for i in backend.details() if i.key == second.key]

    assert backend.has_capacity(third)  # by evicting an idle instance
    assert (await predict(backend, third, text="c"))["output"] == "hello c"

    assert {i.key for i in backend.details()} == {first.key, third.key}
    assert evicted.pid is not None and group_alive(evicted.pid) == []


async def test_busy_instances_are_not_evicted(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(max_instances=1)
    busy, other = spec("slow", pk=1), spec("noop", pk=2)
    events = Events()
    busy_job = job(busy, seconds=120)
    await backend.submit(busy_job, events)
    await events.wait_until(lambda e: "started" in e.names)
    assert not backend.has_capacity(other)

    waiting = Events()
    await backend.submit(job(other), waiting)  # accepted anyway: it waits for room
    assert [i.key for i in backend.details()] == [busy.key]
    assert waiting.calls == []

    await backend.cancel(busy_job.prediction_id)
    assert (await events.finish())["status"] == "canceled"
    assert (await waiting.finish())["status"] == "succeeded"  # the now idle instance made room
    assert [i.key for i in backend.details()] == [other.key]


async def test_max_instances_per_version(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(max_instances_per_version=1)
    version = spec("slow")
    first, second = Events(), Events()
    first_job = job(version, seconds=120)
    await backend.submit(first_job, first)
    await first.wait_until(lambda e: "started" in e.names)
    assert not backend.has_capacity(version)
    assert backend.has_capacity(spec("noop", pk=2))

    await backend.submit(job(version, seconds=0), second)
    assert len(backend.details()) == 1  # it waits for the one instance instead of starting another

    await backend.cancel(first_job.prediction_id)
    assert (await second.finish())["output"] == "awake"
    assert len(backend.details()) == 1


async def test_a_backlog_scales_out_when_allowed(make_backend: Callable[..., Any], tmp_path: Path) -> None:
    backend: LocalBackend = await make_backend(max_instances_per_version=2)
    version = spec("concurrent", concurrency=1)
    eventses = [Events(), Events()]
    for n, events in enumerate(eventses):
        await backend.submit(job(version, name=f"p{n}", rendezvous=str(tmp_path), parties=2), events)
    # One slot per instance: the two can only meet if a second instance was started for the backlog.
    finals = [await events.finish() for events in eventses]
    assert sorted(f["output"] for f in finals) == ["p0 met 1 others", "p1 met 1 others"]
    assert len(backend.details()) == 2


async def test_memory_bound_keeps_one_instance(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend(max_memory_mb=1)
    first, second = spec("noop", pk=1), spec("noop", pk=2)
    await predict(backend, first)
    await eventually(lambda: all(i.rss_bytes > 1024 * 1024 for i in backend.details()))
    [evicted] = backend.details()

    assert backend.has_capacity(second)  # only by evicting the idle one
    assert (await predict(backend, second))["status"] == "succeeded"

    assert [i.key for i in backend.details()] == [second.key]
    assert evicted.pid is not None and group_alive(evicted.pid) == []


async def test_clean_shutdown(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend()
    busy, idle = spec("slow", pk=1), spec("hello", pk=2)
    await predict(backend, idle, text="x")
    events = Events()
    await backend.submit(job(busy, seconds=120), events)
    await events.wait_until(lambda e: "started" in e.names)
    pgids = [i.pid for i in backend.details() if i.pid is not None]
    tmpdirs = [i.tmpdir for i in backend.details() if i.tmpdir is not None]
    assert len(pgids) == 2 and all(is_dir(path) for path in tmpdirs)

    await backend.stop()

    final = await events.finish()
    assert final["status"] == "failed"
    assert final["error"] == "The prediction was interrupted because the server shut down"
    for pgid in pgids:
        assert group_alive(pgid) == []
    assert not any(is_dir(path) for path in tmpdirs)
    assert backend.running() == set()
