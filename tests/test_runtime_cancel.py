"""Canceling predictions, with real coglet processes: every cancel of a submitted job ends it.

coglet 0.23.1 loses cancels in two ways (see :mod:`cogport.runtime.coglet_api`): it answers 404 for
an id it has not registered yet, and its worker drops a cancel that arrives before the worker has
begun the prediction, which it does just *after* coglet sent ``start``. The tests below force each
case with :class:`Intercept`, a transport between the instance and coglet that can answer or hold
a request, and hammer the real race with cancels at every point of a prediction's start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cogport.backends.local import LocalBackend
from cogport.runtime import coglet_api
from cogport.runtime.instance import Instance, InstanceOptions
from cogport.runtime.sandbox import Sandbox
from cogport.runtime.state import InstanceState
from cogport.settings import RuntimeSettings, Settings
from tests.support.runtime import Events, eventually, group_alive, job, prediction_dir, spec

Hook = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


class Intercept(httpx.AsyncBaseTransport):
    """Forwards requests to coglet unless a hook answers them first (a hook may also just wait);
    records the status every cancel request got."""

    def __init__(self, uds: str | None = None, parent: Intercept | None = None) -> None:
        self._inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0), uds=uds)
        self.hooks: list[Hook] = parent.hooks if parent else []
        self.cancels: list[int] = parent.cancels if parent else []
        self.cancel_seen = parent.cancel_seen if parent else asyncio.Event()

    def through(self, uds: str) -> Intercept:
        """The same interception for a sandboxed instance's coglet, behind the unix socket ``uds``."""
        return Intercept(uds, self)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = None
        for hook in list(self.hooks):
            response = await hook(request)
            if response is not None:
                break
        if response is None:
            response = await self._inner.handle_async_request(request)
        if is_cancel(request):
            self.cancels.append(response.status_code)
            self.cancel_seen.set()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def is_cancel(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/cancel")


def is_prediction_post(request: httpx.Request, *, sse: bool | None = None) -> bool:
    if request.method != "POST" or request.url.path != "/predictions":
        return False
    return sse is None or (request.headers.get("accept") == "text/event-stream") == sse


@pytest.fixture
async def intercept() -> AsyncIterator[Intercept]:
    transport = Intercept()
    yield transport
    await transport.aclose()


@pytest.fixture
async def make_instance(intercept: Intercept, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Instance]]]:
    """Started instances whose HTTP goes through ``intercept`` (sandboxed, seeing ``tmp_path``); stopped at
    the end."""
    made: list[Instance] = []
    os.chmod(tmp_path, 0o777)  # models run as uids of their own
    async with httpx.AsyncClient(
        transport=intercept, timeout=httpx.Timeout(5.0, read=120.0), trust_env=False
    ) as client:

        async def make(model: str, options: InstanceOptions | None = None, **kwargs: Any) -> Instance:
            version = spec(model, **kwargs)
            options = options or InstanceOptions()
            options = dataclasses.replace(
                options, sandbox=Sandbox(binds=(tmp_path,)), coglet_transport=intercept.through
            )
            instance = Instance(version, options, client=client, name=f"cancel-{len(made)}")
            made.append(instance)
            await instance.start()
            return instance

        yield make
        for instance in made:
            await instance.stop()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    os.chmod(tmp_path, 0o777)  # models run as uids of their own
    the_backend = LocalBackend(Settings(data_dir=tmp_path / "data", runtime=RuntimeSettings(sandbox_binds=[tmp_path])))
    await the_backend.start()
    yield the_backend
    pgids = [i.pid for i in the_backend.details() if i.pid is not None]
    await the_backend.stop()
    for pgid in pgids:
        assert group_alive(pgid) == [], f"process group {pgid} outlived the backend"


def start_predict(instance: Instance, events: Events, **inputs: Any) -> tuple[str, asyncio.Task[None]]:
    the_job = job(instance.spec, **inputs)
    instance.reserve()
    return the_job.prediction_id, asyncio.create_task(instance.predict(the_job, events))


async def test_every_cancel_right_after_submit_ends_the_job(backend: LocalBackend) -> None:
    """50 submit+cancel rounds on a warm instance: cancel before the job is posted, while it is being
    posted, and right after coglet's ``start`` (where coglet's worker used to drop the cancel)."""
    version = spec("slow")
    warm = Events()
    await backend.submit(job(version, seconds=0), warm)
    assert (await warm.finish())["status"] == "succeeded"
    [instance] = backend.details()

    for round_ in range(50):
        events = Events()
        the_job = job(version, seconds=120)  # a lost cancel would show as a missed deadline
        await backend.submit(the_job, events)
        if round_ % 3 == 1:
            await asyncio.sleep(0)  # the job's task is posting it
        elif round_ % 3 == 2:
            await events.wait_until(lambda e: "started" in e.names)
        assert await backend.cancel(the_job.prediction_id)
        final = await events.finish(within=30)
        assert final["status"] == "canceled", (round_, final)
        assert events.names[-1] == "finished"

    await eventually(lambda: backend.running() == set())
    after = Events()
    await backend.submit(job(version, seconds=0), after)
    assert (await after.finish())["output"] == "awake"
    [still] = backend.details()
    assert still.pid == instance.pid and still.state is InstanceState.READY


async def test_a_cancel_the_worker_dropped_is_sent_again(
    make_instance: Callable[..., Awaitable[Instance]],
    intercept: Intercept,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first cancel is answered 200 but never reaches coglet, like one coglet's worker drops."""
    monkeypatch.setattr(coglet_api, "CANCEL_TRUSTED_AFTER", 3600.0)  # only model output vouches for one
    # A model that never prints: nothing shows when a cancel could reach it, so cancels are repeated.
    instance = await make_instance("flaky_setup", environment={"FLAKY_COUNTER": str(tmp_path / "count")})

    async def swallow_first_cancel(request: httpx.Request) -> httpx.Response | None:
        if is_cancel(request) and not intercept.cancels:
            return httpx.Response(200, json={}, request=request)
        return None

    intercept.hooks.append(swallow_first_cancel)
    events = Events()
    prediction_id, task = start_predict(instance, events, seconds=120)
    await events.wait_until(lambda e: "started" in e.names)
    assert await instance.cancel(prediction_id)
    await asyncio.wait_for(task, 30)

    assert events.final is not None and events.final["status"] == "canceled"
    assert len(intercept.cancels) >= 2 and intercept.cancels[1] == 200
    assert instance.state is InstanceState.READY


async def test_stopping_right_after_the_start_cancels_it_in_coglet(
    make_instance: Callable[..., Awaitable[Instance]],
    intercept: Intercept,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping cancels running predictions in coglet before ``/shutdown`` (which would wait for them),
    a dropped cancel included: with a 60 s stop timeout, only a cancel that got through ends it in time."""
    monkeypatch.setattr(coglet_api, "CANCEL_TRUSTED_AFTER", 3600.0)
    options = InstanceOptions(stop_timeout=60.0)
    instance = await make_instance("flaky_setup", options, environment={"FLAKY_COUNTER": str(tmp_path / "count")})

    async def swallow_first_cancel(request: httpx.Request) -> httpx.Response | None:
        if is_cancel(request) and not intercept.cancels:
            return httpx.Response(200, json={}, request=request)
        return None

    intercept.hooks.append(swallow_first_cancel)
    events = Events()
    _, task = start_predict(instance, events, seconds=120)
    await events.wait_until(lambda e: "started" in e.names)
    await asyncio.wait_for(instance.stop("The server shut down"), 30)
    await asyncio.wait_for(task, 30)

    assert events.final is not None and events.final["status"] == "failed"
    assert events.final["error"] == "The server shut down"
    assert len(intercept.cancels) >= 2
    assert instance.state is InstanceState.STOPPED


async def test_a_cancel_that_reached_the_model_is_sent_once(
    make_instance: Callable[..., Awaitable[Instance]], intercept: Intercept, tmp_path: Path
) -> None:
    """Once the model has printed, an accepted cancel surely reached it: no second
    ``CancelationException`` may interrupt its clean-up."""
    instance = await make_instance("slow")
    marker = tmp_path / "stopped"
    events = Events()
    prediction_id, task = start_predict(instance, events, seconds=120, marker=str(marker))
    await events.wait_until(lambda e: "sleeping" in e.log_text)
    assert await instance.cancel(prediction_id)
    await asyncio.wait_for(task, 30)

    assert events.final is not None and events.final["status"] == "canceled"
    assert marker.read_text() == "stopped"
    assert intercept.cancels == [200]


async def test_a_cancel_before_coglet_knows_the_id_is_retried(
    make_instance: Callable[..., Awaitable[Instance]], intercept: Intercept
) -> None:
    """On the plain-POST path (trainings, schemas without streaming) ``started`` comes before the POST;
    a cancel that reaches coglet first gets 404 and must be sent again."""
    instance = await make_instance("slow")

    async def refuse_sse(request: httpx.Request) -> httpx.Response | None:
        if is_prediction_post(request, sse=True):
            return httpx.Response(406, json={"error": "no streaming"}, request=request)
        return None

    async def post_after_a_404(request: httpx.Request) -> httpx.Response | None:
        if is_prediction_post(request, sse=False):
            while 404 not in intercept.cancels:
                intercept.cancel_seen.clear()
                await intercept.cancel_seen.wait()
        return None

    intercept.hooks += [refuse_sse, post_after_a_404]
    events = Events()
    prediction_id, task = start_predict(instance, events, seconds=120)
    await events.wait_until(lambda e: "started" in e.names)
    assert await instance.cancel(prediction_id)
    await asyncio.wait_for(task, 30)

    assert events.final is not None and events.final["status"] == "canceled"
    assert intercept.cancels[0] == 404 and 200 in intercept.cancels
    assert instance.state is InstanceState.READY


async def test_a_cancel_between_409_retries_is_never_posted(
    make_instance: Callable[..., Awaitable[Instance]], intercept: Intercept
) -> None:
    instance = await make_instance("slow")
    refused = asyncio.Event()

    async def at_capacity(request: httpx.Request) -> httpx.Response | None:
        if is_prediction_post(request):
            refused.set()
            return httpx.Response(409, json={"error": "At capacity", "status": "failed"}, request=request)
        return None

    intercept.hooks.append(at_capacity)
    events = Events()
    prediction_id, task = start_predict(instance, events, seconds=120)
    await asyncio.wait_for(refused.wait(), 30)
    assert await instance.cancel(prediction_id)
    await asyncio.wait_for(task, 30)

    assert events.names == ["finished"] and events.final is not None
    assert events.final["status"] == "canceled"
    assert intercept.cancels == []  # coglet never had it
    assert instance.process is not None
    assert not prediction_dir(prediction_id, instance.process).exists()
    intercept.hooks.clear()
    after = Events()
    _, task = start_predict(instance, after, seconds=0)
    await asyncio.wait_for(task, 30)
    assert after.final is not None and after.final["output"] == "awake"


async def test_a_cancel_while_the_stream_is_being_opened(
    make_instance: Callable[..., Awaitable[Instance]], intercept: Intercept
) -> None:
    """Canceled while its POST is on the way: it is canceled as soon as coglet announces it."""
    instance = await make_instance("slow")
    posting, canceled = asyncio.Event(), asyncio.Event()

    async def hold_the_post(request: httpx.Request) -> httpx.Response | None:
        if is_prediction_post(request):
            posting.set()
            await canceled.wait()
        return None

    intercept.hooks.append(hold_the_post)
    events = Events()
    prediction_id, task = start_predict(instance, events, seconds=120)
    await asyncio.wait_for(posting.wait(), 30)
    assert await instance.cancel(prediction_id)
    canceled.set()
    await asyncio.wait_for(task, 30)

    assert events.final is not None and events.final["status"] == "canceled"
    assert 200 in intercept.cancels
    assert instance.state is InstanceState.READY


async def test_a_cancel_during_the_cold_start(backend: LocalBackend) -> None:
    version = spec("slow")
    events = Events()
    the_job = job(version, seconds=120)
    await backend.submit(the_job, events)
    assert [i.state for i in backend.details()] == [InstanceState.STARTING]
    assert await backend.cancel(the_job.prediction_id)
    assert (await events.finish())["status"] == "canceled"
    assert events.names == ["finished"]

    after = Events()
    await backend.submit(job(version, seconds=0), after)  # the instance that was starting serves it
    assert (await after.finish())["output"] == "awake"
    assert len(backend.details()) == 1
