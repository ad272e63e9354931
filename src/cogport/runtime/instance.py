"""One coglet server (``python -m cog.server.http``) supervised through its HTTP API.

Lifecycle (states in :mod:`cogport.runtime.state`)::

    inst = Instance(spec, options, client=client, name="v1-1")
    await inst.start()          # spawn, poll /health-check until READY; raises SetupFailed
    inst.reserve()              # take a prediction slot (READY only)
    await inst.predict(job, events)   # prediction in that slot; always ends in events.finished
    await inst.cancel(prediction_id)  # POST /predictions/{id}/cancel (repeated); finished(canceled) follows
    await inst.stop()           # POST /shutdown, then SIGTERM, then SIGKILL of the process group

The coglet traps it handles:

* **409 race**: coglet releases a slot just *after* writing a response, so a prediction sent at once
  gets 409; it is retried after 1 ms (doubling, bounded), checking health when it persists.
* **No worker restart**: after a worker crash coglet stays up but UNHEALTHY (409 forever). The
  instance turns FAILED at the first sign (``"Worker crashed"``, UNHEALTHY/DEFUNCT, an exit, a broken
  stream); in-flight predictions fail with the exit code and the tail of the log; the pool replaces it.
* **Nagle on SSE** and **no SSE for trainings**: see :mod:`cogport.runtime.coglet_api`.
* **Crashed worker's exit code**: coglet leaves the dead worker a zombie, so its wait status is read
  from ``/proc`` (:mod:`cogport.runtime.procfs`): "The model crashed (exit code -9)".
* **Setup never killed**: coglet reports a setup timeout but leaves the worker running; stopping
  kills the whole process group.
* **Leaked prediction dirs**: ``/tmp/coglet/predictions/<id>`` (hard-coded, TMPDIR is ignored) is
  handed to a :class:`~cogport.runtime.sweeper.PredictionDirSweeper` after each prediction.
* **Cancel and shutdown**: closing an SSE stream cancels the prediction in coglet, and ``/shutdown``
  waits for running predictions, so stopping first asks coglet to cancel them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cogport.core.jobs import Job, JobEvents, OutputFileSink, VersionSpec
from cogport.core.outcome import Outcome
from cogport.errors import InstanceUnavailable, SetupFailed
from cogport.runtime.coglet_api import (
    CANCEL_RETRY_MAX,
    CANCEL_TRUSTED_AFTER,
    LOG_DRAIN,
    CogletApi,
    Lost,
    NotStreamable,
)
from cogport.runtime.http1 import KeepAliveClient
from cogport.runtime.ports import free_port
from cogport.runtime.prediction import PredictionRun, worker_crashed
from cogport.runtime.process import Boundary, CogletProcess
from cogport.runtime.sandbox import COGLET_PORT, Sandbox
from cogport.runtime.state import InstanceState
from cogport.runtime.sweeper import PredictionDirSweeper

log = logging.getLogger(__name__)

HEALTH_FATAL = frozenset({"SETUP_FAILED", "UNHEALTHY", "DEFUNCT"})
CONFLICT_GIVE_UP = 10.0
"""Seconds of 409s (with our slot accounting saying a slot is free) before the instance is declared broken."""
START_ATTEMPTS = 8
"""Starts of one unconfined instance that may fail because another instance took its loopback port meanwhile
(chosen free, then bound by coglet); the loser starts again after a random pause. Sandboxed instances never
race: each has a network namespace of its own (its own ports and abstract socket names)."""
FORCE_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL once a graceful stop is over (or was skipped)."""
"""Seconds to let coglet's output reach the log tail before quoting it in an error."""
_SETUP_PREFIX = re.compile(r"^(?:(?:worker )?setup failed(?: \(slot [^)]*\))?:\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class InstanceOptions:
    setup_timeout: float = 600.0
    stop_timeout: float = 10.0
    cancel_grace: float = 5.0
    """Seconds a canceled prediction gets to end before the instance is killed (see :meth:`Instance.cancel`)."""
    health_interval: float = 2.0
    """Seconds between health checks of a READY/BUSY instance (an exit is noticed at once anyway)."""
    upload_url: str | None = None
    """Passed as ``--upload-url``: where coglet PUTs output files (unset: they come back as data URLs)."""
    file_sink: OutputFileSink | None = None
    """Keeps the file outputs of versions whose output is a list of files: those run without
    ``--upload-url`` (coglet reports uploads in completion order) and their ``data:`` URLs come here."""
    sandbox: Sandbox | None = field(default_factory=Sandbox)
    """The sandbox the model runs in (see :mod:`cogport.runtime.sandbox`); ``None``: unconfined."""
    boundary: Boundary = field(default_factory=Boundary)
    """What a sandboxed instance may reach and use: egress, cogport's gateway, limits."""
    coglet_transport: Callable[[str], httpx.AsyncBaseTransport] | None = None
    """The HTTP transport to a sandboxed coglet behind a unix socket (default: a plain one, no keep-alive:
    coglet's SSE stalls on a reused connection)."""
    on_ready: Callable[[float], None] | None = None
    """Told the seconds from spawn to READY of every instance that starts (the cold-start metric)."""


def _unix_transport(uds: str) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(uds=uds, limits=httpx.Limits(max_keepalive_connections=0, max_connections=None))


class Instance:
    """One coglet process group serving ``spec``, with ``spec.concurrency`` prediction slots."""

    def __init__(
        self,
        spec: VersionSpec,
        options: InstanceOptions,
        *,
        client: httpx.AsyncClient,
        name: str,
        on_change: Callable[[Instance], None] | None = None,
        sweeper: PredictionDirSweeper | None = None,
        plain_client: KeepAliveClient | None = None,
        gpus: tuple[int, ...] = (),
    ) -> None:
        self.spec = spec
        self.options = options
        self.name = name
        self.slots = max(1, spec.concurrency)
        self.reserved = 0
        self.state = InstanceState.STARTING
        self.failure: str | None = None
        """Why it FAILED (or why it was stopped): the error in-flight predictions report."""
        self.last_used = time.monotonic()
        self.ready_after: float | None = None
        """Seconds from spawn to READY."""
        self.rss_bytes = 0
        self.process: CogletProcess | None = None
        self.port = 0
        self._client = client
        self._own_client: httpx.AsyncClient | None = None
        """The client of a sandboxed instance (its unix socket), closed with its process."""
        self._plain_client = plain_client
        self.gpus = gpus
        self.created_at = datetime.now(UTC)
        """When it was made (wall clock, for the instances endpoints)."""
        """The GPU indices this instance holds (``CUDA_VISIBLE_DEVICES``; none for a CPU instance)."""
        self._on_change = on_change
        self.sweeper = sweeper or PredictionDirSweeper()
        """Collects the ids of finished predictions; whoever owns it calls ``sweep()`` (the pool does)."""
        self._runs: dict[str, PredictionRun] = {}
        self._exit: asyncio.Future[int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        output = output_schema(spec)
        self._iterator_output = output.get("x-cog-array-type") == "iterator"
        self._file_sink = options.file_sink if file_list_output(output) else None
        self._endpoint = "predictions" if spec.mode == "predict" else "trainings"
        self._api = CogletApi(client, self.url, self._endpoint, self._conflict_is_fatal)

    def __repr__(self) -> str:
        return f"<Instance {self.name} {self.state} {self.reserved}/{self.slots}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def free_slots(self) -> int:
        """Slots a job can still be bound to (counting a STARTING instance's future slots)."""
        return self.slots - self.reserved if self.state.is_live else 0

    @property
    def idle(self) -> bool:
        return self.state is InstanceState.READY and self.reserved == 0

    def running(self) -> set[str]:
        return set(self._runs)

    # --- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn coglet and wait until READY. Raises :class:`SetupFailed` (the instance is then FAILED)."""
        self._require(InstanceState.STARTING)
        began = time.monotonic()
        try:
            for attempt in range(START_ATTEMPTS):
                await self._spawn()
                try:
                    await self._wait_ready()
                    break
                except SetupFailed as failed:
                    # A sandbox has a network namespace of its own: no port or socket name of another's.
                    lost = self._lost_address_race(failed) if self.options.sandbox is None else None
                    if lost is None or attempt + 1 >= START_ATTEMPTS:
                        raise
                    log.info("%s: %s was taken by another instance starting; starting again", self.name, lost)
                    await self._discard_process()
                    # both sides of a race retry: apart, so that they do not meet again
                    await asyncio.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
        except SetupFailed as exc:
            self._fail(exc.detail)
            await asyncio.sleep(LOG_DRAIN)  # coglet's last setup lines may still be in the pipe
            raise SetupFailed(exc.detail, logs=self.setup_output()) from None
        except Exception as exc:  # e.g. the venv's python is missing
            self._fail(f"The model server could not be started: {exc}")
            raise SetupFailed(self.failure or "", logs=self.setup_output()) from exc
        if self.state is not InstanceState.STARTING:  # stopped while starting
            raise SetupFailed(self.failure or "The model was stopped while it started")
        assert self.process is not None
        self.process.logs.setup_done = True
        self.ready_after = time.monotonic() - began
        self.last_used = time.monotonic()
        self._set_state(InstanceState.READY)
        if self.options.on_ready is not None:
            self.options.on_ready(self.ready_after)
        self._watcher = asyncio.create_task(self._watch(), name=f"cogport-watch-{self.name}")
        log.info("%s is ready (%.2fs, port %d, pid %d)", self.name, self.ready_after, self.port, self.process.pid)

    async def _spawn(self) -> None:
        self.port = free_port() if self.options.sandbox is None else COGLET_PORT
        self.process = await CogletProcess.spawn(
            self.spec,
            name=self.name,
            port=self.port,
            setup_timeout=self.options.setup_timeout,
            upload_url=None if self._file_sink is not None else self.options.upload_url,
            gpus=self.gpus,
            sandbox=self.options.sandbox,
            boundary=self.options.boundary,
        )
        client = self._client
        if self.process.uds is not None:  # sandboxed: coglet is behind a unix socket of its own
            await self._close_own_client()
            self._own_client = client = httpx.AsyncClient(
                transport=(self.options.coglet_transport or _unix_transport)(self.process.uds),
                timeout=self._client.timeout,
                trust_env=False,
            )
        self._api = CogletApi(
            client,
            self.url,
            self._endpoint,
            self._conflict_is_fatal,
            plain_client=self._plain_client,
            uds=self.process.uds,
        )
        self._exit = asyncio.ensure_future(self.process.wait())
        if self.state is not InstanceState.STARTING:  # stopped while spawning
            await self._discard_process()
            raise SetupFailed(self.failure or "The model was stopped while it started")

    def _lost_address_race(self, failed: SetupFailed) -> str | None:
        """What another instance took while this one started, if that is why it failed: coglet's worker
        socket (see :data:`START_ATTEMPTS`) or the HTTP port (chosen free, then bound by coglet)."""
        if "failed to create transport" in failed.detail and "Address already in use" in failed.detail:
            return "coglet's worker socket name"
        if self.process is not None and "Address already in use" in self.process.logs.tail(50):
            return f"port {self.port}"
        return None

    async def _discard_process(self) -> None:
        if self.process is not None:
            await self.process.terminate(grace=1.0)
            self.process = None
        await self._close_own_client()

    async def _close_own_client(self) -> None:
        if self._own_client is not None:
            await self._own_client.aclose()
            self._own_client = None

    async def _wait_ready(self) -> None:
        """Poll ``/health-check`` until READY, and at once whenever coglet logs a milestone of its own
        ("Server ready", "Worker initialization failed"): polling alone would add up to a poll interval."""
        assert self.process is not None and self._exit is not None
        milestone = self.process.logs.milestone
        # coglet enforces COG_SETUP_TIMEOUT itself; this guard covers a server that never answers.
        deadline = time.monotonic() + self.options.setup_timeout + 30.0
        delay = 0.01
        while self.state is InstanceState.STARTING:
            milestone.clear()
            if self._exit.done():
                raise SetupFailed(self._exit_message("during setup"), logs=self.setup_output())
            health = await self._api.health()
            status = health.get("status") if health else None
            if status == "READY":
                return
            if status in HEALTH_FATAL:
                raise SetupFailed(self._setup_error(health or {}), logs=self.setup_output())
            if time.monotonic() > deadline:
                raise SetupFailed(self._timeout_message(), logs=self.setup_output())
            logged: asyncio.Future[Any] = asyncio.ensure_future(milestone.wait())
            waiters: list[asyncio.Future[Any]] = [self._exit, logged]
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            logged.cancel()
            delay = min(delay * 1.5, 0.5)
        raise SetupFailed(self.failure or "The model was stopped while it started", logs=self.setup_output())

    def _setup_error(self, health: dict[str, Any]) -> str:
        setup = health.get("setup") or {}
        detail = str(setup.get("logs") or "").strip() if isinstance(setup, dict) else ""
        if "timed out" in detail:
            return self._timeout_message()
        if health.get("status") != "SETUP_FAILED":
            return f"The model became {health.get('status')} during setup"
        cleaned = _SETUP_PREFIX.sub("", detail.splitlines()[-1] if detail else "").strip()
        return f"Model setup failed: {cleaned}" if cleaned else "Model setup failed"

    def _timeout_message(self) -> str:
        return f"Model setup timed out after {self.options.setup_timeout:g} seconds"

    def setup_output(self) -> str:
        """What the model printed during setup (for a failed start's logs)."""
        return self.process.logs.setup_output() if self.process else ""

    # --- health -------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """While READY/BUSY: notice an exit at once, and UNHEALTHY/DEFUNCT within ``health_interval``."""
        assert self._exit is not None
        while self.state in (InstanceState.READY, InstanceState.BUSY):
            await asyncio.wait([self._exit], timeout=self.options.health_interval)
            if self.state not in (InstanceState.READY, InstanceState.BUSY):
                return
            if self._exit.done():
                self._fail(self._exit_message("while idle" if not self._runs else "during the prediction"))
                return
            health = await self._api.health()
            if health and health.get("status") in HEALTH_FATAL:
                self._fail(self._crash_message(f"the model server became {health.get('status')}"))
                return

    # --- slots --------------------------------------------------------------------------------

    def reserve(self) -> None:
        """Take one prediction slot; only a READY instance (with a free slot) has one."""
        self._require(InstanceState.READY)
        self.reserved += 1
        self.last_used = time.monotonic()
        if self.reserved >= self.slots:
            self._set_state(InstanceState.BUSY)

    def _release(self) -> None:
        self.reserved = max(0, self.reserved - 1)
        self.last_used = time.monotonic()
        if self.state is InstanceState.BUSY:
            self._set_state(InstanceState.READY)
        elif self._on_change is not None:
            self._on_change(self)

    # --- predictions --------------------------------------------------------------------------

    async def predict(self, job: Job, events: JobEvents, *, canceled: bool = False) -> None:
        """Run ``job`` in a slot taken with :meth:`reserve`; returns after ``events.finished``.

        ``canceled``: the job was canceled before it got here (it is reported canceled, unposted).
        """
        if self.reserved <= 0:
            raise InstanceUnavailable(f"{self.name}: predict() without a reserved slot")
        run = PredictionRun(job, events, iterator_output=self._iterator_output, file_sink=self._file_sink)
        run.cancel_requested = canceled
        self._runs[job.prediction_id] = run
        try:
            outcome = await self._run(run)
        except Exception as exc:  # whatever went wrong handing it over, the run ends (never stuck)
            log.exception("%s: running %s failed", self.name, job.prediction_id)
            outcome = Outcome("failed", error=f"The prediction could not be run: {type(exc).__name__}: {exc}")
        finally:
            self._runs.pop(job.prediction_id, None)
            if run.cancel_task is not None:
                run.cancel_task.cancel()  # the prediction is over: nothing left to cancel
            self._release()
        self.sweeper.add(job.prediction_id, self.process.prediction_dirs if self.process else None)
        await run.finish(self._explained(outcome))

    def _explained(self, outcome: Outcome) -> Outcome:
        """``outcome`` with an upload refused by the sandbox's bound named (coglet says only "413")."""
        gateway = self.process.gateway if self.process else None
        if gateway is None or not outcome.error or "upload returned status 413" not in outcome.error:
            return outcome
        limit = gateway.upload_limit
        note = f" (an output file is larger than this server's upload limit, {limit}: COGPORT_SANDBOX__UPLOAD_MAX_MB)"
        return dataclasses.replace(outcome, error=outcome.error + note)

    async def _run(self, run: PredictionRun) -> Outcome:
        if run.cancel_requested:
            return Outcome("canceled")
        if self.state not in (InstanceState.READY, InstanceState.BUSY) or self.process is None:
            return Outcome("failed", error=self.failure or f"The model is {self.state}")
        result: Outcome | Lost | NotStreamable
        if self._iterator_output:
            result = await self._api.stream(run, cancel_due=lambda: self._cancel_in_coglet(run))
        else:
            result = NotStreamable()  # nothing to stream: the cheaper plain POST (see coglet_api)
        if isinstance(result, NotStreamable):
            result = await self._api.post(run, self.process.logs, cancel_due=lambda: self._cancel_in_coglet(run))
        if isinstance(result, Lost):
            result = await self._lost(result.reason)
        return self._settle(run, result)

    def _settle(self, run: PredictionRun, outcome: Outcome) -> Outcome:
        """Turn coglet's view of the end into the one users see."""
        if run.cancel_requested and outcome.status != "succeeded" and (run.killed or not self.state.is_live):
            # the user canceled it and it stopped: by force (it did not stop on its own), or because the
            # instance stopped meanwhile (a shutdown): canceled is what happened to it, not a failure
            return Outcome("canceled", logs=run.streamed_logs, metrics=outcome.metrics)
        if worker_crashed(outcome):
            self._fail(self._crash_message("its worker process died"))
            return Outcome("failed", error=self.failure, logs=run.streamed_logs, metrics=outcome.metrics)
        if outcome.status == "canceled" and not run.cancel_requested:
            # Canceled by us (stop/shutdown), not by the user: that is a failure to them.
            error = self.failure or "The prediction was interrupted because its model was stopped"
            return Outcome("failed", error=error, logs=outcome.logs, metrics=outcome.metrics)
        return outcome

    async def _conflict_is_fatal(self, since: float) -> bool:
        """A 409 that outlasts the slot-release race means coglet lost slots (a crashed worker)."""
        if time.monotonic() - since < 0.05:
            return False
        health = await self._api.health()
        status = health.get("status") if health else None
        if status in HEALTH_FATAL or health is None:
            self._fail(self._crash_message(f"the model server became {status or 'unreachable'}"))
            return True
        if time.monotonic() - since > CONFLICT_GIVE_UP:
            self._fail("The model server refused predictions although it had free slots")
            return True
        return False

    async def _lost(self, reason: str) -> Outcome:
        """The exchange broke off: find out why, and fail the instance."""
        if not self.state.is_live:  # already failed (or stopping): that is the reason
            return Outcome("failed", error=self.failure or "The model was stopped during the prediction")
        assert self._exit is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exit), 1.0)
        if self._exit.done():
            self._fail(self._exit_message("during the prediction"))
        else:
            health = await self._api.health()
            status = health.get("status") if health else "unreachable"
            self._fail(self._crash_message(f"{reason} (health: {status})"))
        return Outcome("failed", error=self.failure)

    # --- cancel -------------------------------------------------------------------------------

    async def cancel(self, prediction_id: str) -> bool:
        """Ask coglet to stop a prediction; False if it is not running here.

        The cancel is sent once coglet knows the prediction (``start``; until then it is remembered,
        and a prediction not yet posted is not posted at all) and repeated until it surely reached
        the model (see :meth:`CogletApi.cancel`); ``finished(canceled)`` follows when the model stopped.
        """
        run = self._runs.get(prediction_id)
        if run is None:
            return False
        run.cancel_requested = True
        self._cancel_in_coglet(run)
        return True

    def _cancel_in_coglet(self, run: PredictionRun) -> None:
        """Start canceling ``run`` in coglet once coglet can know it; idempotent."""
        if run.started and run.cancel_task is None and not run.finished:
            run.cancel_sent_at = time.monotonic()
            run.cancel_task = asyncio.create_task(
                self._cancel_task(run), name=f"cogport-cancel-{run.job.prediction_id}"
            )

    async def _cancel_task(self, run: PredictionRun) -> None:
        """Cancel ``run`` in coglet; if it has not ended ``cancel_grace`` seconds later, kill the instance.

        coglet's cancel is an exception raised in the model's Python code: a model blocked in C (a
        ``time.sleep``, a native library call) never sees it, and coglet has no other way to stop one
        prediction. So the instance goes (its process group is killed; the pool starts another when work
        needs one): the prediction ends canceled, the other runs it held fail saying why, and the queue
        behind it moves. This task is itself canceled when the run ends, which ends the wait."""
        grace = self.options.cancel_grace
        try:
            await asyncio.wait_for(self._api.cancel(run), grace)
        except TimeoutError:
            pass
        except Exception:  # never left unretrieved; the escalation below still ends the run
            log.exception("%s: canceling %s failed", self.name, run.job.prediction_id)
        elapsed = time.monotonic() - (run.cancel_sent_at or time.monotonic())
        await asyncio.sleep(max(0.0, grace - elapsed))
        if run.finished or not self.state.is_live:
            return
        run.killed = True
        log.warning(
            "%s: %s did not stop %g s after its cancel: killing the instance", self.name, run.job.prediction_id, grace
        )
        self._fail(f"A prediction it ran did not stop within {grace:g} s of being canceled; the model was stopped")

    # --- stop ---------------------------------------------------------------------------------

    def begin_stop(self, reason: str | None = None) -> asyncio.Task[None]:
        """Mark the instance STOPPING now (so nothing new is bound to it) and stop it in the background.

        Running predictions are canceled in coglet first (``/shutdown`` would wait for them) and
        finish as failed with ``reason``. Idempotent: every call returns the same task.
        """
        if self._stop_task is None:
            if self.failure is None:
                self.failure = reason
            graceful = self.state in (InstanceState.READY, InstanceState.BUSY)
            self._set_state(InstanceState.STOPPING)
            self._stop_task = asyncio.create_task(self._stop(graceful), name=f"cogport-stop-{self.name}")
        return self._stop_task

    async def stop(self, reason: str | None = None) -> None:
        """Stop the instance and everything in its process group (see :meth:`begin_stop`)."""
        await asyncio.shield(self.begin_stop(reason))

    async def _stop(self, graceful: bool) -> None:
        try:
            await self._shutdown(graceful)
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
            self._set_state(InstanceState.STOPPED)
            log.info("%s stopped", self.name)

    async def _shutdown(self, graceful: bool) -> None:
        """A healthy server gets ``/shutdown`` and ``stop_timeout`` seconds; a failed or still starting one
        (whose ``/shutdown`` would wait on a hung or dead worker) only a short SIGTERM grace."""
        process = self.process
        if process is None:
            return
        timeout = self.options.stop_timeout
        if graceful and process.returncode is None:
            cancels: list[asyncio.Task[None]] = []
            for run in list(self._runs.values()):
                run.stop_for_instance()  # one not yet announced is canceled at its start
                self._cancel_in_coglet(run)
                if run.cancel_task is not None:
                    cancels.append(run.cancel_task)
            if cancels:  # /shutdown closes coglet's listener: the cancels must get through first
                await asyncio.wait(cancels, timeout=min(timeout, CANCEL_TRUSTED_AFTER + CANCEL_RETRY_MAX))
            with contextlib.suppress(httpx.HTTPError):
                await self._api.shutdown()
            assert self._exit is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit), timeout)
        await process.terminate(grace=min(FORCE_GRACE, timeout))
        await self._close_own_client()

    # --- state --------------------------------------------------------------------------------

    def _require(self, *states: InstanceState) -> None:
        if self.state not in states:
            wanted = " or ".join(states)
            raise InstanceUnavailable(f"{self.name} is {self.state}, not {wanted}")

    def _set_state(self, state: InstanceState) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(self)

    def _fail(self, reason: str) -> None:
        if not self.state.is_live:
            return
        log.warning("%s failed: %s", self.name, reason)
        self.failure = reason
        self._set_state(InstanceState.FAILED)

    def _exit_message(self, when: str) -> str:
        code = self.process.returncode if self.process else None
        crossed = self.process.limit_crossed() if self.process else None
        if crossed:
            return self._with_tail(f"The model {crossed} (exit code {code}) {when}")
        return self._with_tail(f"The model crashed (exit code {code}) {when}")

    def _crash_message(self, why: str) -> str:
        code = self.process.worker_exit_code() if self.process else None
        crossed = self.process.limit_crossed() if self.process else None
        if crossed:
            return self._with_tail(f"The model {crossed} (exit code {code}): {why}")
        head = f"The model crashed (exit code {code})" if code is not None else "The model crashed"
        return self._with_tail(f"{head}: {why}")

    def _with_tail(self, message: str) -> str:
        tail = self.process.logs.tail() if self.process else ""
        return f"{message}.\nLast log lines:\n{tail}" if tail else f"{message}."


def output_schema(spec: VersionSpec) -> dict[str, Any]:
    """The schema of the output (``{}`` when unknown), from the file coglet reads."""
    try:
        schema = json.loads((Path(spec.source_path) / ".cog" / "openapi_schema.json").read_text())
        output = schema["components"]["schemas"]["Output" if spec.mode == "predict" else "TrainingOutput"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return output if isinstance(output, dict) else {}


def file_list_output(output: dict[str, Any]) -> bool:
    """A ``list[Path]`` or ``Iterator[Path]`` output: an array of ``format: uri`` strings."""
    items = output.get("items")
    return output.get("type") == "array" and isinstance(items, dict) and items.get("format") == "uri"
