"""The pool of coglet instances on this machine: slots, on-demand starts, restarts, idle stops, capacity.

* **Slots.** An instance of a version has ``spec.concurrency`` slots. A submitted job waits in its
  version's queue until a READY instance has a free slot, then runs there in a task of its own.
* **Starts.** As many instances as the waiting and running work needs (:mod:`cogport.runtime.scaling`),
  within each group's limits: on demand at most ``max_instances_per_version``; a deployment's between its
  minimum and maximum (:meth:`Pool.ensure`). Restart/backoff/refusal rules are in :mod:`cogport.runtime.group`.
* **GPUs.** Each instance holds the GPUs its spec's hardware names (:mod:`cogport.runtime.gpus`).
* **Crashes.** A FAILED instance is stopped at once; its in-flight jobs fail (see
  :mod:`cogport.runtime.instance`); when it crashed mid-prediction a replacement is started.
* **Idle stops.** An instance with no work for ``idle_timeout`` seconds is stopped.
* **Capacity.** At most ``max_instances`` instances hold resources (stopping ones included), at most
  ``max_instances_per_version`` of one version when set, and,
  when ``max_memory_mb`` is set, their resident memory (from ``/proc``, whole process groups) plus
  the expected size of the next one stays under it; one instance may always run. When full, the
  least recently used idle instance of another version is stopped to make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from cogport.core.jobs import Capacity, InstanceView, Job, JobEvents, OutputFileSink, VersionSpec
from cogport.core.outcome import Outcome
from cogport.errors import BackendUnavailable, Conflict, SetupFailed
from cogport.hardware import Gpu
from cogport.runtime import sandbox
from cogport.runtime.gateway import EgressPolicy
from cogport.runtime.gpus import GpuAllocator
from cogport.runtime.group import Ticket, VersionGroup
from cogport.runtime.http1 import KeepAliveClient
from cogport.runtime.instance import Instance, InstanceOptions
from cogport.runtime.prediction import report
from cogport.runtime.process import Boundary
from cogport.runtime.sandbox import Sandbox
from cogport.runtime.scaling import Limits
from cogport.runtime.state import InstanceState
from cogport.runtime.sweeper import PredictionDirSweeper
from cogport.settings import RuntimeSettings, SandboxSettings

log = logging.getLogger(__name__)

MEMORY_SAMPLE_INTERVAL = 2.0
SHUTDOWN_REASON = "The prediction was interrupted because the server shut down"
Room = Literal["now", "soon", "evict", "no"]


@dataclass(frozen=True)
class InstanceInfo:
    """A snapshot of one instance, for status pages and tests."""

    name: str
    key: str
    state: InstanceState
    pid: int | None
    port: int
    reserved: int
    slots: int
    last_used: float
    rss_bytes: int
    ready_after: float | None
    tmpdir: str | None
    """The instance's private TMPDIR (removed when it stops)."""
    hardware: str = "cpu"
    gpus: tuple[int, ...] = ()
    """The GPU indices it holds (its ``CUDA_VISIBLE_DEVICES``)."""
    pool: str = ""
    started_at: datetime | None = None

    def view(self, node: str) -> InstanceView | None:
        """As the API shows it (None once it has stopped)."""
        if self.state in (InstanceState.STOPPED,):
            return None
        state: Literal["starting", "idle", "busy", "stopping"]
        if self.state is InstanceState.STARTING:
            state = "starting"
        elif self.state in (InstanceState.STOPPING, InstanceState.FAILED):
            state = "stopping"
        else:
            state = "busy" if self.reserved else "idle"
        return InstanceView(
            id=self.name,
            key=self.key,
            pool=self.pool,
            state=state,
            hardware=self.hardware,
            node=node,
            gpus=self.gpus,
            started_at=self.started_at or datetime.now(UTC),
        )


def boundary_for(boundary: SandboxSettings, internal_base: str, storage_endpoint: str | None) -> Boundary:
    """What sandboxed instances may reach: the egress policy (the storage endpoint, which presigned input
    URLs name, always admitted), cogport's gateway at ``internal_base``, the upload bound, the limits."""
    parts = urlsplit(storage_endpoint or "")
    storage = (
        (parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)) if parts.hostname else None
    )
    return Boundary(
        egress=EgressPolicy.parse(boundary.egress, always=frozenset([storage] if storage else [])),
        internal_base=internal_base,
        storage=storage,
        upload_max_bytes=boundary.upload_max_mb << 20,
        limits=boundary.limits_for,
    )


def _coglet_client() -> httpx.AsyncClient:
    """The client of the instances' coglet APIs, made with the first instance rather than at the start: making
    an httpx transport imports httpcore, and with ``verify`` left on it loaded the CA bundle (together some
    30-60 ms of CPU at every start, for a server that may run no model for a while)."""
    return httpx.AsyncClient(
        # A fresh connection per request: coglet's SSE stalls ~40 ms on a reused one (Nagle).
        limits=httpx.Limits(max_keepalive_connections=0, max_connections=None),
        timeout=httpx.Timeout(5.0, read=120.0),  # coglet sends an SSE keep-alive every 15 s
        trust_env=False,
        verify=False,  # coglet is plain HTTP on 127.0.0.1 (Instance.url): no TLS, no CA bundle to load
    )


class Pool:
    """All coglet instances of this process. ``start()`` before use, ``stop()`` at the end."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        upload_url: str | None = None,
        file_sink: OutputFileSink | None = None,
        on_capacity: Callable[[], None] | None = None,
        gpus: Iterable[Gpu] = (),
        on_ready: Callable[[float], None] | None = None,
        boundary: SandboxSettings | None = None,
        internal_base: str = "http://127.0.0.1:8000",
        storage_endpoint: str | None = None,
    ) -> None:
        self.settings = settings
        self.gpus = GpuAllocator(gpus)
        self.options = InstanceOptions(
            setup_timeout=settings.setup_timeout,
            stop_timeout=settings.stop_timeout,
            cancel_grace=settings.cancel_grace,
            upload_url=upload_url,
            file_sink=file_sink,
            sandbox=Sandbox.configured(settings, boundary) if settings.sandbox else None,
            boundary=boundary_for(boundary or SandboxSettings(), internal_base, storage_endpoint),
            on_ready=on_ready,
        )
        self._on_capacity = on_capacity
        self._groups: dict[str, VersionGroup] = {}
        self._tickets: dict[str, Ticket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._plain_client: KeepAliveClient | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._state: Literal["new", "running", "stopping", "stopped"] = "new"
        self._pumping = False
        self._pump_again = False
        self.sweeper = PredictionDirSweeper()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError("a Pool can be started once")
        if self.options.sandbox is not None:
            await sandbox.check(self.options.sandbox)  # fail fast, with the reason
        else:
            log.warning("COGPORT_RUNTIME__SANDBOX=off: models run unconfined and can read the server's data")
        # Plain POSTs keep their connections (one response write each: no Nagle stall, no reconnect).
        self._plain_client = KeepAliveClient()
        self._reaper = asyncio.create_task(self._reap(), name="cogport-pool-reaper")
        self._state = "running"

    async def stop(self) -> None:
        """Stop every instance. Jobs still waiting for a slot are dropped without ``finished``
        (their predictions are still ``starting``: the dispatcher requeues them); running ones
        are canceled in coglet and finish ``failed`` (interrupted by the shutdown)."""
        if self._state in ("stopping", "stopped"):
            return
        self._state = "stopping"
        if self._reaper is not None:
            self._reaper.cancel()
        for group in self._groups.values():
            if group.retry_timer is not None:
                group.retry_timer.cancel()
            while group.waiting:
                ticket = group.waiting.popleft()
                if ticket.task is not None:
                    ticket.task.cancel()
        instances = [i for g in self._groups.values() for i in g.instances]
        await asyncio.gather(*(i.stop(SHUTDOWN_REASON) for i in instances), return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.settings.stop_timeout + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        if self._plain_client is not None:
            await self._plain_client.aclose()
        await self.sweeper.sweep()
        self._state = "stopped"

    # --- the Backend operations ---------------------------------------------------------------

    def has_capacity(self, spec: VersionSpec) -> bool:
        """Whether a job for ``spec`` would get a slot without waiting behind others (see :meth:`capacity`)."""
        capacity = self.capacity(spec)
        return capacity.free > 0 and capacity.refused is None

    def capacity(self, spec: VersionSpec) -> Capacity:
        """How many more jobs for ``spec`` would get a slot without waiting behind others, or why none can.

        The free slots of the version's instances (READY or starting) nobody waits for yet; else, when one
        more instance can be started (perhaps after evicting an idle one), its slots; else 0. ``refused``
        while the version is refused after repeated setup failures, or its hardware is lacking.
        """
        if self._state != "running":
            return Capacity(free=0)
        lacking = self._lacking_hardware(spec)
        if lacking is not None:
            return Capacity(free=0, refused=lacking)
        now = time.monotonic()
        slots = max(1, spec.concurrency)
        group = self._groups.get(spec.key)
        if group is None:
            return Capacity(free=slots if self._room(spec, None) != "no" else 0)
        refusal = group.refusal(now)
        if refusal is not None:
            return Capacity(free=0, refused=refusal.detail, logs=refusal.logs)
        slack = group.slack()
        if slack > 0:
            return Capacity(free=slack)
        if not group.can_grow(now, self._limits(group)):
            return Capacity(free=0)
        return Capacity(free=slots if self._room(spec, group) != "no" else 0)

    def ensure(self, spec: VersionSpec, minimum: int, maximum: int) -> None:
        """Keep between ``minimum`` and ``maximum`` instances of ``spec`` (a deployment's): the minimum are
        started without work and replaced when they crash; more start as work needs them; those above the
        minimum stop once idle for ``idle_timeout``. ``ensure(spec, 0, ...)`` lets them all idle out."""
        if self._state != "running":
            return
        group = self._groups.get(spec.key)
        if group is None:
            group = self._groups[spec.key] = VersionGroup(spec)
        group.limits = Limits(minimum=max(0, minimum), maximum=max(0, maximum))
        self._pump()

    def _limits(self, group: VersionGroup) -> Limits:
        if group.limits is not None:
            return group.limits
        per_version = self.settings.max_instances_per_version
        return Limits(minimum=0, maximum=per_version or self.settings.max_instances)

    def _lacking_hardware(self, spec: VersionSpec) -> str | None:
        if self.gpus.exists(spec.hardware):
            return None
        return f"The hardware {spec.hardware!r} is not available on this installation"

    def waiting(self, spec: VersionSpec) -> int:
        """Jobs for ``spec`` submitted and still waiting for a slot."""
        group = self._groups.get(spec.key)
        return len(group.waiting) if group is not None else 0

    def submit(self, job: Job, events: JobEvents) -> None:
        """Queue ``job`` for a slot of its version; it runs in a task of its own.

        Never refuses for lack of capacity (the job waits; check :meth:`capacity` first).
        Raises :class:`SetupFailed` while the version is refused, :class:`Conflict` for an id
        already running, :class:`BackendUnavailable` when the pool is not running.
        """
        if self._state != "running":
            raise BackendUnavailable("The model runtime is not running")
        if job.prediction_id in self._tickets:
            raise Conflict(f"Prediction {job.prediction_id} is already running")
        lacking = self._lacking_hardware(job.spec)
        if lacking is not None:
            raise SetupFailed(lacking)
        group = self._groups.get(job.spec.key)
        if group is None:
            group = self._groups[job.spec.key] = VersionGroup(job.spec)
        refusal = group.refusal(time.monotonic())
        if refusal is not None:
            raise refusal
        ticket = Ticket(job, events, group, asyncio.get_running_loop().create_future())
        self._tickets[job.prediction_id] = ticket
        group.waiting.append(ticket)
        ticket.task = self._spawn(self._run(ticket), f"cogport-job-{job.prediction_id}")
        self._pump()

    async def cancel(self, prediction_id: str) -> bool:
        """Cancel a job: a waiting one finishes ``canceled`` at once, a running one once coglet
        reports it stopped. False if the id is unknown (or already finished)."""
        ticket = self._tickets.get(prediction_id)
        if ticket is None or ticket.canceled:
            return ticket is not None
        ticket.canceled = True
        if ticket.instance is None:
            with contextlib.suppress(ValueError):
                ticket.group.waiting.remove(ticket)
            if not ticket.bound.done():
                ticket.bound.set_result(Outcome("canceled"))
            self._pump()
            return True
        await ticket.instance.cancel(prediction_id)
        return True

    def running(self) -> set[str]:
        """Ids of every job submitted and not yet finished (waiting for a slot included)."""
        return set(self._tickets)

    def instances(self) -> list[InstanceInfo]:
        return [
            InstanceInfo(
                name=i.name,
                key=g.key,
                state=i.state,
                pid=i.process.pid if i.process else None,
                port=i.port,
                reserved=i.reserved,
                slots=i.slots,
                last_used=i.last_used,
                rss_bytes=i.rss_bytes,
                ready_after=i.ready_after,
                tmpdir=i.process.tmpdir if i.process else None,
                hardware=i.spec.hardware,
                gpus=i.gpus,
                pool=i.spec.pool,
                started_at=i.created_at,
            )
            for g in self._groups.values()
            for i in g.instances
        ]

    # --- jobs ---------------------------------------------------------------------------------

    async def _run(self, ticket: Ticket) -> None:
        try:
            bound = await ticket.bound
            if isinstance(bound, Outcome):
                await report(ticket.job, ticket.events, bound)
            else:
                await bound.predict(ticket.job, ticket.events, canceled=ticket.canceled)
        except Exception as exc:  # every path out of here reports an end: a run is never left stuck
            log.exception("the runtime failed to run %s", ticket.job.prediction_id)
            error = f"The runtime failed to run the prediction: {type(exc).__name__}: {exc}"
            await report(ticket.job, ticket.events, Outcome("failed", error=error))
        finally:
            self._tickets.pop(ticket.job.prediction_id, None)

    def _bind(self, group: VersionGroup) -> None:
        while group.waiting:
            instance = group.ready_with_slot()
            if instance is None:
                return
            ticket = group.waiting.popleft()
            instance.reserve()
            ticket.instance = instance
            ticket.bound.set_result(instance)

    def _fail_waiting(self, group: VersionGroup, error: SetupFailed) -> None:
        while group.waiting:
            ticket = group.waiting.popleft()
            if not ticket.bound.done():
                ticket.bound.set_result(Outcome("failed", error=error.detail, logs=error.logs))

    # --- the pump: bind waiting jobs, start and evict instances --------------------------------

    def _pump(self) -> None:
        """Re-evaluate everything after any change. Reentrant calls are folded into the running one."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._pump_once()
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        if self._state != "running":
            return
        now = time.monotonic()
        for group in self._groups.values():
            self._bind(group)
        for group in list(self._groups.values()):
            if group.needs_start(now, self._limits(group)):
                room = self._room(group.spec, group)
                if room == "now":
                    self._start_instance(group)
                elif room == "evict":
                    victim = self._victim(group.spec, group)
                    if victim is not None:
                        log.info("stopping idle %s to make room for %s", victim.name, group.key)
                        victim.begin_stop("evicted to make room")
            elif group.waiting and group.in_backoff(now) and group.retry_timer is None:
                group.retry_timer = asyncio.get_running_loop().call_at(group.retry_at, self._retry, group)

    def _retry(self, group: VersionGroup) -> None:
        group.retry_timer = None
        self._pump()
        self._notify()

    def _holders(self) -> Iterator[Instance]:
        for group in self._groups.values():
            for instance in group.instances:
                if instance.state.holds_resources:
                    yield instance

    def _room(self, spec: VersionSpec, group: VersionGroup | None) -> Room:
        """Whether another instance of ``spec`` fits now, soon (one is stopping), after an eviction, or not:
        within ``max_instances`` and ``max_memory_mb``, and with free GPUs of its hardware's type."""
        holders = list(self._holders())
        fits_count = len(holders) < self.settings.max_instances
        limit = self.settings.max_memory_mb * 1024 * 1024
        expected = group.rss_estimate if group is not None else 0
        fits_memory = not limit or not holders or sum(i.rss_bytes for i in holders) + expected <= limit
        if fits_count and fits_memory and self.gpus.fits(spec.hardware):
            return "now"
        if any(i.state in (InstanceState.STOPPING, InstanceState.FAILED) for i in holders):
            return "soon"
        return "evict" if self._victim(spec, group) is not None else "no"

    def _victim(self, spec: VersionSpec, group: VersionGroup | None) -> Instance | None:
        """The least recently used idle instance of another version, above its group's minimum; one holding
        GPUs of ``spec``'s type when the GPUs are what is short."""
        idle = [
            i
            for g in self._groups.values()
            if g is not group and len(g.live()) > self._limits(g).minimum  # a deployment's minimum stays
            for i in g.instances
            if i.idle
        ]
        if not self.gpus.fits(spec.hardware):
            kind, _ = self.gpus.needs(spec.hardware)
            idle = [i for i in idle if i.gpus and self.gpus.needs(i.spec.hardware)[0] == kind]
        return min(idle, key=lambda i: i.last_used) if idle else None

    def _start_instance(self, group: VersionGroup) -> None:
        if self._client is None:  # with the first instance, not at the start (see _coglet_client)
            self._client = _coglet_client()
        group.started += 1
        group.replace = False
        name = f"{group.spec.version_id[:12]}-{group.spec.mode}-{group.started}"
        instance = Instance(
            group.spec,
            self.options,
            client=self._client,
            name=name,
            on_change=self._changed,
            sweeper=self.sweeper,
            plain_client=self._plain_client,
            gpus=self.gpus.take(group.spec.hardware, name),
        )
        group.instances.append(instance)
        self._spawn(self._supervise(group, instance), f"cogport-start-{name}")

    async def _supervise(self, group: VersionGroup, instance: Instance) -> None:
        """Start ``instance``; a failed start is recorded by :meth:`_changed` when it turns FAILED."""
        try:
            await instance.start()
        except SetupFailed:
            await instance.stop()
            return
        group.start_succeeded()
        await self._measure(instance)

    # --- instance events ----------------------------------------------------------------------

    def _changed(self, instance: Instance) -> None:
        group = self._groups.get(instance.spec.key)
        if instance.state is InstanceState.FAILED and group is not None:
            self._failed(group, instance)
        elif instance.state is InstanceState.STOPPED:
            self.gpus.release(instance.gpus)
        if instance.state is InstanceState.STOPPED and group is not None:
            with contextlib.suppress(ValueError):
                group.instances.remove(instance)
            forgettable = group.limits is None or group.limits.minimum == 0
            idle_group = not group.instances and not group.waiting and group.last_error is None
            if idle_group and not group.replace and forgettable:
                del self._groups[group.key]  # nothing to remember about it
        self._pump()
        if instance.state in (InstanceState.READY, InstanceState.STOPPED):
            self._notify()

    def _failed(self, group: VersionGroup, instance: Instance) -> None:
        """Stop a FAILED instance; record a failed start (before anything could start the next one)."""
        if instance.ready_after is None and self._state == "running":
            error = SetupFailed(instance.failure or "Model setup failed", logs=instance.setup_output())
            if group.start_failed(error, self.settings, time.monotonic()):
                log.warning("%s failed to start %d times in a row: %s", group.key, self.settings.setup_attempts, error)
                self._fail_waiting(group, error)
        elif instance.running() and self._state == "running":
            group.replace = True
        instance.begin_stop()

    def _notify(self) -> None:
        if self._on_capacity is not None and self._state == "running":
            try:
                self._on_capacity()
            except Exception:
                log.exception("the on_capacity hook failed")

    # --- background: idle stops and memory samples --------------------------------------------

    async def _reap(self) -> None:
        tick = max(0.05, min(1.0, self.settings.idle_timeout / 4))
        next_sample = 0.0
        while True:
            await asyncio.sleep(tick)
            try:
                next_sample = await self._reap_once(next_sample)
            except Exception:
                log.exception("the runtime's housekeeping failed; retrying")

    async def _reap_once(self, next_sample: float) -> float:
        """Sweep prediction dirs, stop idle instances, sample memory; returns the next sample time."""
        await self.sweeper.sweep()
        now = time.monotonic()
        for group in list(self._groups.values()):
            limits = self._limits(group)
            live = group.live()
            idle = sorted((i for i in live if i.idle), key=lambda i: i.last_used)
            spare = len(live) - limits.minimum
            for instance in idle:
                if spare <= 0:
                    break
                over = len(live) > limits.maximum  # the maximum was lowered: stop the extra at once
                if over or now - instance.last_used >= self.settings.idle_timeout:
                    log.info("stopping %s: idle for %.0fs", instance.name, now - instance.last_used)
                    instance.begin_stop("stopped after being idle")
                    live.remove(instance)
                    spare -= 1
        if now < next_sample:
            return next_sample
        for instance in list(self._holders()):
            if instance.state.is_live:
                await self._measure(instance)
        return now + MEMORY_SAMPLE_INTERVAL

    async def _measure(self, instance: Instance) -> None:
        process = instance.process
        if process is None:
            return
        instance.rss_bytes = await asyncio.to_thread(process.rss_bytes)
        group = self._groups.get(instance.spec.key)
        if group is not None and instance.state is not InstanceState.STARTING:
            group.rss_estimate = max(group.rss_estimate, instance.rss_bytes)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())
