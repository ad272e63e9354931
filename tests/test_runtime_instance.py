"""One coglet instance, run for real from the fixture models (tests/fixtures/models)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from cogport.core.jobs import VersionSpec
from cogport.errors import InstanceUnavailable, SetupFailed
from cogport.runtime.instance import Instance, InstanceOptions
from cogport.runtime.sandbox import COGLET_PORT, Sandbox
from cogport.runtime.state import InstanceState
from tests.support.runtime import Events, eventually, group_alive, is_dir, job, prediction_dir, spec

MakeInstance = Callable[..., Awaitable[Instance]]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_keepalive_connections=0), timeout=httpx.Timeout(5.0, read=120.0), trust_env=False
    ) as c:
        yield c


@pytest.fixture
async def make_instance(client: httpx.AsyncClient, tmp_path: Path) -> AsyncIterator[MakeInstance]:
    """Creates sandboxed instances (started unless ``start=False``) that see the test's ``tmp_path``,
    and stops them all at the end."""
    made: list[Instance] = []
    os.chmod(tmp_path, 0o777)  # models run as uids of their own

    async def make(version: VersionSpec, *, start: bool = True, **options: float) -> Instance:
        sandbox = Sandbox(binds=(tmp_path,))
        instance = Instance(
            version, InstanceOptions(**options, sandbox=sandbox), client=client, name=f"test-{len(made)}"
        )
        made.append(instance)
        if start:
            await instance.start()
        return instance

    yield make
    for instance in made:
        await instance.stop()


async def run(instance: Instance, **inputs: object) -> dict[str, object]:
    events = Events()
    instance.reserve()
    await instance.predict(job(instance.spec, **inputs), events)
    assert events.final is not None
    return events.final


async def test_ready_and_a_prediction_with_logs(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("hello"))
    assert instance.state is InstanceState.READY
    assert instance.process is not None and instance.port > 0

    events = Events()
    the_job = job(instance.spec, text="bob")
    instance.reserve()
    assert instance.state is InstanceState.BUSY
    await instance.predict(the_job, events)

    assert events.names == ["started", "logs", "finished"]
    assert events.log_text == "greeting bob\n"
    assert events.final is not None
    assert events.final["status"] == "succeeded"
    assert events.final["output"] == "hello bob"
    assert events.final["error"] is None
    assert events.final["logs"] == "greeting bob\n"
    assert "predict_time" in events.final["metrics"]
    assert instance.state is InstanceState.READY
    assert prediction_dir(the_job.prediction_id, instance.process).exists()  # coglet leaves it behind ...
    assert instance.sweeper.pending == 1
    await instance.sweeper.sweep()
    assert not prediction_dir(the_job.prediction_id, instance.process).exists()  # ... the sweeper removes it


async def test_a_training_runs_in_train_mode_with_its_logs_relayed(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("trainer"))
    events = Events()
    instance.reserve()
    await instance.predict(job(instance.spec, steps=3), events)
    # coglet refuses SSE for trainings: the plain POST is used, the logs come from coglet's own log.
    assert events.names == ["started", "logs", "logs", "logs", "finished"]
    assert events.log_text == "step 0\nstep 1\nstep 2\n"
    assert events.final is not None
    assert events.final["status"] == "succeeded"
    assert events.final["output"] == {"weights": "weights after 3 steps"}
    assert events.final["logs"] == "step 0\nstep 1\nstep 2\n"


async def test_operations_check_the_state(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("noop"), start=False)
    with pytest.raises(InstanceUnavailable):
        instance.reserve()
    await instance.start()
    instance.reserve()
    with pytest.raises(InstanceUnavailable):  # one slot, taken: BUSY
        instance.reserve()
    with pytest.raises(InstanceUnavailable):
        await instance.start()


async def test_invalid_input_fails_with_the_field_named(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("hello"))
    final = await run(instance)
    assert final["status"] == "failed"
    assert final["error"] == "Invalid input: text: Field required"
    assert instance.state is InstanceState.READY


async def test_iterator_outputs_arrive_one_by_one(make_instance: MakeInstance, tmp_path: Path) -> None:
    instance = await make_instance(spec("iterator"))
    gate = tmp_path / "gate"
    events = Events()
    instance.reserve()
    task = asyncio.create_task(instance.predict(job(instance.spec, count=3, gate=str(gate)), events))

    # The model blocks after its first token until the gate exists: seeing that token first proves
    # it was streamed, not delivered with the rest at the end.
    await events.wait_until(lambda e: ("output", ["token0 "]) in e.calls)
    assert events.final is None
    gate.touch()
    await task

    outputs = [value for name, value in events.calls if name == "output"]
    assert outputs == [["token0 "], ["token0 ", "token1 "], ["token0 ", "token1 ", "token2 "]]
    assert events.final is not None
    assert events.final["status"] == "succeeded"
    assert events.final["output"] == ["token0 ", "token1 ", "token2 "]
    assert events.names[0] == "started"


async def test_cancel_reports_canceled_only_after_the_model_stopped(
    make_instance: MakeInstance, tmp_path: Path
) -> None:
    instance = await make_instance(spec("slow"))
    marker = tmp_path / "stopped"
    events = Events()
    seen_at_finish: list[bool] = []
    events.on_finished = lambda: seen_at_finish.append(marker.exists())
    the_job = job(instance.spec, seconds=120, marker=str(marker))
    instance.reserve()
    task = asyncio.create_task(instance.predict(the_job, events))
    await events.wait_until(lambda e: "sleeping" in e.log_text)

    assert await instance.cancel(the_job.prediction_id)
    await task

    assert events.final is not None
    assert events.final["status"] == "canceled"
    assert events.final["error"] is None
    assert seen_at_finish == [True]  # the model's finally block ran before we said canceled
    assert not await instance.cancel(the_job.prediction_id)
    assert instance.state is InstanceState.READY
    assert (await run(instance, seconds=0))["output"] == "awake"


async def test_cancel_before_the_prediction_starts(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("noop"))
    events = Events()
    instance.reserve()
    await instance.predict(job(instance.spec), events, canceled=True)
    assert events.names == ["finished"]
    assert events.final is not None and events.final["status"] == "canceled"


async def test_a_crash_fails_the_prediction_and_the_instance(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("crash"))
    final = await run(instance)
    assert final["status"] == "failed"
    error = str(final["error"])
    assert error.startswith("The model crashed (exit code -9)"), error
    assert "Last log lines:" in error
    assert instance.state in (InstanceState.FAILED, InstanceState.STOPPING, InstanceState.STOPPED)
    with pytest.raises(InstanceUnavailable):
        instance.reserve()


async def test_setup_failure_raises_with_the_setup_error(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("setup_fail"), start=False)
    with pytest.raises(SetupFailed) as caught:
        await instance.start()
    assert caught.value.detail == "Model setup failed: RuntimeError: weights missing: /nonexistent/weights.bin"
    # caught.value.logs holds the setup output coglet passed on; it sometimes drops a failed setup's.
    assert instance.state is InstanceState.FAILED


async def test_setup_hang_fails_after_the_timeout_and_is_killed(make_instance: MakeInstance) -> None:
    # 4 s: on a loaded box coglet and the worker may take more than a second to reach setup's first line
    instance = await make_instance(spec("setup_hang"), start=False, setup_timeout=4.0)
    with pytest.raises(SetupFailed) as caught:
        await instance.start()
    assert caught.value.detail == "Model setup timed out after 4 seconds"
    assert "setup is hanging" in caught.value.logs
    assert instance.process is not None
    pgid = instance.process.pgid
    assert group_alive(pgid)  # coglet leaves the hung worker running ...
    await instance.stop()
    assert group_alive(pgid) == []  # ... stopping kills the whole group


async def test_stop_leaves_no_process_and_no_temp_dir(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("hello"))
    assert instance.process is not None
    pgid, tmpdir = instance.process.pgid, instance.process.tmpdir
    assert len(group_alive(pgid)) >= 2  # the coglet server and its Python worker
    assert is_dir(tmpdir)

    await instance.stop()

    assert instance.state is InstanceState.STOPPED
    assert group_alive(pgid) == []
    assert not is_dir(tmpdir)
    await instance.stop()  # idempotent


async def test_stopping_a_running_prediction_fails_it(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("slow"))
    events = Events()
    instance.reserve()
    task = asyncio.create_task(instance.predict(job(instance.spec, seconds=120), events))
    await events.wait_until(lambda e: "started" in e.names)

    await instance.stop("The server shut down")
    await task

    assert events.final is not None
    assert events.final["status"] == "failed"
    assert events.final["error"] == "The server shut down"


async def test_back_to_back_predictions_ride_out_the_409_race(make_instance: MakeInstance) -> None:
    instance = await make_instance(spec("noop"))
    for _ in range(40):
        final = await run(instance)
        assert final["status"] == "succeeded", final


async def test_concurrent_slots(make_instance: MakeInstance, tmp_path: Path) -> None:
    instance = await make_instance(spec("concurrent", concurrency=4))
    assert instance.slots == 4
    eventses = [Events() for _ in range(4)]
    tasks = []
    for n, events in enumerate(eventses):
        instance.reserve()
        the_job = job(instance.spec, name=f"p{n}", rendezvous=str(tmp_path), parties=4)
        tasks.append(asyncio.create_task(instance.predict(the_job, events)))
    assert instance.state is InstanceState.BUSY
    await asyncio.gather(*tasks)
    # Each prediction waits until all four have arrived, so they can only finish if they ran together.
    assert sorted(str(e.final and e.final["output"]) for e in eventses) == [f"p{n} met 3 others" for n in range(4)]
    await eventually(lambda: instance.state is InstanceState.READY)


async def test_sandboxed_instances_started_at_once_all_become_ready(
    make_instance: MakeInstance, caplog: pytest.LogCaptureFixture
) -> None:
    """coglet names its worker sockets ``@coglet-<pid>-<slot>`` in the abstract namespace and every sandbox has
    a fresh PID namespace (every coglet has the same pid), but each sandbox also has a network namespace of
    its own, and with it its own abstract names and ports: four started at once all start the first time,
    each on the same port inside, each behind a unix socket of its own."""
    instances = [await make_instance(spec("noop"), start=False) for _ in range(4)]
    caplog.set_level(logging.INFO, logger="cogport.runtime.instance")
    await asyncio.gather(*(instance.start() for instance in instances))
    assert all(instance.state is InstanceState.READY for instance in instances)
    assert {instance.port for instance in instances} == {COGLET_PORT}
    assert len({instance.process.uds for instance in instances if instance.process}) == 4
    assert not [r for r in caplog.records if "starting again" in r.getMessage()]  # each started once
    for instance in instances:
        assert (await run(instance))["status"] == "succeeded"
