"""The local backend: runs jobs in coglet processes on this machine (see docs/runtime.md).

Usage (in the app's lifespan)::

    backend = LocalBackend(settings, upload_url=None, on_capacity=dispatcher.wake)
    await backend.start()
    ...
    if backend.has_capacity(spec):          # capacity(spec).refused says why not, when refused
        await backend.submit(job, recorder) # returns at once; the job runs in a task
    await backend.cancel(prediction_id)
    backend.running()                       # ids submitted and not finished yet
    await backend.stop()

Event semantics (``JobEvents``, awaited in order per job):

* ``started`` when coglet starts the prediction (after any cold start: until then the job is
  ``starting``); not called for a job canceled or failed before it ran.
* ``logs(text)`` with each new piece of output as the model prints it.
* ``output(list_so_far)`` for iterator outputs only, after each yield; plain outputs come with
  ``finished``.
* ``finished`` exactly once per submitted job, except for jobs still waiting for a slot when the
  backend stops (they are dropped so the dispatcher requeues them). ``error`` is user-facing:
  coglet's prefixes stripped, crashes as ``The model crashed (exit code -9) ...`` with the tail of
  the model's log, setup failures as ``Model setup failed: <exception>``, invalid input as
  ``Invalid input: <field>: <problem>``. ``logs`` is the whole log (streamed logs when coglet's
  final object has none).
"""

from __future__ import annotations

from collections.abc import Callable

from cogport import hardware
from cogport.core.jobs import Capacity, InstanceView, Job, JobEvents, OutputFileSink, VersionSpec
from cogport.files.urls import internal_base_url
from cogport.runtime.pool import InstanceInfo, Pool
from cogport.settings import HardwareSku, Settings


class LocalBackend:
    """The :class:`~cogport.backends.base.Backend` that supervises coglet instances locally.

    ``upload_url``: passed to every instance as ``--upload-url`` (coglet PUTs output files to
    ``<upload_url><basename>``); unset, file outputs come back as ``data:`` URLs.
    ``file_sink``: keeps file outputs of versions whose output is a list of files; those run without
    ``--upload-url``, since coglet reports uploads in completion order (see docs/files.md).
    ``on_capacity``: called (synchronously, must not block) when capacity may have grown: an
    instance became READY or stopped, or a start backoff ended. Finishing jobs also frees slots;
    ``finished`` is the signal for that.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        upload_url: str | None = None,
        file_sink: OutputFileSink | None = None,
        on_capacity: Callable[[], None] | None = None,
        node: str = "local",
        on_ready: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.node = node
        """This machine's name in the instances endpoints."""
        self.gpus = hardware.inventory(settings)
        self.pool = Pool(
            settings.runtime,
            upload_url=upload_url,
            file_sink=file_sink,
            on_capacity=on_capacity,
            gpus=self.gpus,
            on_ready=on_ready,
            boundary=settings.sandbox,
            internal_base=internal_base_url(settings),
            storage_endpoint=settings.storage.endpoint_url,
        )

    async def start(self) -> None:
        await self.pool.start()

    async def stop(self) -> None:
        """Stop every instance (running jobs finish ``failed``: interrupted by the shutdown)."""
        await self.pool.stop()

    def has_capacity(self, spec: VersionSpec) -> bool:
        """Whether a job for ``spec`` would run without waiting behind others (a free slot, an
        instance starting with a free slot, or room to start one, perhaps by stopping an idle one).
        False while the version is refused (see :meth:`capacity`, which says why)."""
        return self.pool.has_capacity(spec)

    def capacity(self, spec: VersionSpec) -> Capacity:
        """How many more jobs for ``spec`` would start without waiting behind others, or (``refused``) why
        none can while the version is refused."""
        return self.pool.capacity(spec)

    def waiting(self, spec: VersionSpec) -> int:
        """Jobs for ``spec`` submitted and still waiting for a slot."""
        return self.pool.waiting(spec)

    async def submit(self, job: Job, events: JobEvents) -> None:
        """Queue ``job`` for a slot of its version and return; it runs in a task of its own.

        Raises :class:`~cogport.errors.SetupFailed` while the version is refused,
        :class:`~cogport.errors.Conflict` if the id is already running, and
        :class:`~cogport.errors.BackendUnavailable` when the backend is not started.
        """
        self.pool.submit(job, events)

    async def cancel(self, prediction_id: str) -> bool:
        """Cancel a job: one waiting for a slot finishes ``canceled`` at once; a running one once
        the model has stopped. False if the id is not running here."""
        return await self.pool.cancel(prediction_id)

    def running(self) -> set[str]:
        """Ids of the jobs submitted and not yet finished (those waiting for a slot included)."""
        return self.pool.running()

    def details(self) -> list[InstanceInfo]:
        """A snapshot of the instances (state, pid, slots, memory, GPUs), for tests and diagnostics."""
        return self.pool.instances()

    def instances(self) -> list[InstanceView]:
        """The instances as the API shows them (stopped ones left out)."""
        views = (info.view(self.node) for info in self.pool.instances())
        return [view for view in views if view is not None]

    def ensure(self, spec: VersionSpec, minimum: int, maximum: int) -> None:
        """See :meth:`cogport.runtime.pool.Pool.ensure`."""
        self.pool.ensure(spec, minimum, maximum)

    def hardware(self) -> list[HardwareSku]:
        """``cpu``, the SKUs this machine's GPUs can hold, and the operator's additions."""
        return hardware.available(self.settings, self.gpus)
