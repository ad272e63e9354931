"""The backend interface: how the dispatcher hands work to whatever runs models.

The local backend (:mod:`cogport.backends.local`) runs coglet processes on this machine; a Ray
backend will implement the same Protocol. Backends never touch the database: they report what
happens through :class:`JobEvents`, and the lifecycle module records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from cogport.settings import HardwareSku

Mode = Literal["predict", "train"]


def clean_error(message: str | None) -> str | None:
    """A user-facing error: coglet doubles ``Prediction failed: `` in front of the model's exception,
    Replicate shows it bare. Backends report errors this way; the lifecycle applies it to any error."""
    if message is None:
        return None
    text = message.strip()
    while text.lower().startswith("prediction failed:"):
        text = text[len("prediction failed:") :].strip()
    return text or "Prediction failed"


@dataclass(frozen=True)
class VersionSpec:
    """Everything needed to start an instance of a version (its identity is ``key``)."""

    version_pk: int
    version_id: str
    mode: Mode
    source_path: str
    venv_path: str
    ref: str
    """``predict.py:Predictor`` or ``train.py:train``."""
    concurrency: int = 1
    environment: dict[str, str] = field(default_factory=dict)
    weights: str | None = None
    """Passed to ``setup(weights)`` through ``COG_WEIGHTS`` (trained versions): a file on this machine,
    copied out of storage by the dispatcher before a job or instance of the spec starts."""
    weights_key: str | None = None
    """The storage key ``weights`` was copied from (so a backend on another node can fetch it itself)."""
    hardware: str = "cpu"
    """The SKU its instances run on: ``cpu`` (no GPU visible) or ``gpu-<type>[-Nx]`` (N GPUs of their own)."""
    pool: str = ""
    """Whose instances these are: ``""`` for a model's on-demand ones, ``deployment:<owner>/<name>``."""
    tenant: int = 0
    """The model's id: where cogport is root, each model's code runs as a host uid of its own (one per
    model, finer than one per account)."""
    bundle_key: str = ""
    """The storage key of the version's bundle (``bundles/<version id>/source.tar.gz``): what a node that
    did not build the version prepares it from (:func:`cogport.build.prepare.prepare`). ``source_path`` and
    ``venv_path`` are paths on the host that built it."""

    @property
    def key(self) -> str:
        suffix = "" if self.hardware == "cpu" and not self.pool else f":{self.hardware}:{self.pool}"
        return f"{self.version_pk}:{self.mode}{suffix}"


@dataclass(frozen=True)
class Capacity:
    """What a backend can take for a spec now."""

    free: int
    """Jobs that would start without waiting behind others (free slots, or a new instance's)."""
    refused: str | None = None
    """Set while the spec is refused (its setup keeps failing, its hardware is lacking): the reason, which
    queued work of the spec should fail with."""
    logs: str | None = None
    """The failed setup's output, when refused for that."""


@dataclass(frozen=True)
class Job:
    prediction_id: str
    spec: VersionSpec
    input: dict[str, Any]


class JobEvents(Protocol):
    """Callbacks a backend calls as a job runs. All are awaited in order for one job."""

    async def started(self, job: Job) -> None: ...

    async def logs(self, job: Job, text: str) -> None:
        """``text`` is new log output (appended to what came before)."""

    async def output(self, job: Job, output: Any) -> None:
        """The output so far (for iterators, the whole list so far)."""

    async def finished(
        self,
        job: Job,
        status: Literal["succeeded", "failed", "canceled"],
        *,
        output: Any,
        error: str | None,
        logs: str | None,
        metrics: dict[str, Any],
    ) -> None: ...


class OutputFileSink(Protocol):
    """Where a backend keeps file outputs that arrive inline (the lifecycle's ``OutputFiles``)."""

    async def keep(self, data_url: str, index: int) -> str:
        """Keep ``data_url``, the ``index``-th item of a job's output, as an output file; its URL."""


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


@dataclass(frozen=True)
class InstanceView:
    """One instance, as status pages and the instances endpoints show it."""

    id: str
    key: str
    """Its spec's key."""
    pool: str
    state: Literal["starting", "idle", "busy", "stopping"]
    hardware: str
    node: str
    gpus: tuple[int, ...]
    started_at: datetime
