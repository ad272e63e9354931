"""The backend interface: how the dispatcher hands work to whatever runs models.

The local backend (:mod:`cogport.backends.local`) runs coglet processes on this machine; a Ray
backend will implement the same Protocol. Backends never touch the database: they report what
happens through :class:`~cogport.core.jobs.JobEvents`, and the lifecycle module records it. The job
vocabulary (spec, job, events, capacity) lives in :mod:`cogport.core.jobs`; import it from there.
"""

from __future__ import annotations

from typing import Protocol

from cogport.core.jobs import Capacity, InstanceView, Job, JobEvents, VersionSpec
from cogport.settings import HardwareSku

__all__ = ["Backend"]


class Backend(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def has_capacity(self, spec: VersionSpec) -> bool:
        """Whether a job for ``spec`` could start now (a free slot, or room to start an instance)."""

    def capacity(self, spec: VersionSpec) -> Capacity:
        """How many more jobs for ``spec`` could start now without waiting behind others, or why none can."""

    def waiting(self, spec: VersionSpec) -> int:
        """Jobs for ``spec`` submitted and still waiting for a slot (taken ahead, so no slot idles)."""

    async def submit(self, job: Job, events: JobEvents) -> None:
        """Start ``job``; returns once it is handed over (not when it finishes)."""

    async def cancel(self, prediction_id: str) -> bool:
        """Ask the model to stop; ``finished(canceled)`` follows once it has. False if unknown."""

    def running(self) -> set[str]:
        """Ids of the jobs this backend is running now."""

    def ensure(self, spec: VersionSpec, minimum: int, maximum: int) -> None:
        """Hold ``spec``'s instances between ``minimum`` and ``maximum`` (a deployment's): the minimum up
        without work and replaced when they crash, more as work needs them, idle extras stopped."""

    def instances(self) -> list[InstanceView]:
        """What runs now: one entry per instance (starting, idle, busy or stopping)."""

    def hardware(self) -> list[HardwareSku]:
        """The SKUs runs can ask for (``/v1/hardware``): ``cpu`` and what the GPUs can hold."""
