"""A job and what surrounds it: the spec of the instances that run it, the events a backend reports as it
runs, what a backend can take, and what it shows of its instances.

Backends (:mod:`cogport.backends`) take :class:`Job` s and report through :class:`JobEvents`; the runtime
runs them; build prepares a :class:`VersionSpec`'s code; the lifecycle records the events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from cogport.core.kinds import Mode
from cogport.core.outcome import Outcome


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
    """Whose instances these are: ``""`` for a model's on-demand ones, ``deployment:<owner>/<name>`` for a
    deployment's (built and read by :mod:`cogport.core.pools`)."""
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

    async def finished(self, job: Job, outcome: Outcome) -> None:
        """How ``job`` ended; called exactly once per job a backend took."""


class OutputFileSink(Protocol):
    """Where a backend keeps file outputs that arrive inline (the lifecycle's ``OutputFiles``)."""

    async def keep(self, data_url: str, index: int) -> str:
        """Keep ``data_url``, the ``index``-th item of a job's output, as an output file; its URL."""


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
