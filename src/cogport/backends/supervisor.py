"""The node supervisor: one per Ray node, a detached actor pinned to it (see docs/cluster.md).

It runs the local backend on its node: the same pool, placement on the node's own GPUs (its ``nvidia-smi``,
or ``COGPORT_GPUS`` in the node's environment), sandbox and autoscaling as a single machine. A version is
prepared on the node before its first instance starts: its bundle is fetched from storage and its virtualenv
built from the bundle's lock, once per node (:func:`cogport.build.prepare.prepare`, cached in the node dir).
API processes (:class:`cogport.backends.raycluster.RayBackend`) ask it for its state, hand it jobs and follow each job's
events through a streaming generator. Every API process shares it: it holds no per-process state.

Nothing here imports Ray: the class becomes an actor in :mod:`cogport.backends.raycluster`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cogport import hardware
from cogport.backends.local import LocalBackend
from cogport.build.errors import BuildError
from cogport.build.prepare import prepare
from cogport.core.jobs import Capacity, InstanceView, Job, VersionSpec
from cogport.core.outcome import Outcome
from cogport.errors import CogportError
from cogport.runtime.weights import WeightsCache
from cogport.settings import HardwareSku, RuntimeSettings, SandboxSettings, Settings, StorageSettings
from cogport.storage.base import Storage
from cogport.storage.factory import open_storage
from cogport.storage.local import LocalStorage

log = logging.getLogger(__name__)
CANCELED_TTL = 600.0

Event = tuple[Any, ...]
"""``("started",)``, ``("logs", text)``, ``("output", output)``, ``("refused", message)`` or
``("finished", outcome)`` (an :class:`~cogport.core.outcome.Outcome`): what a job's generator yields, in order."""


@dataclass(frozen=True)
class NodeState:
    """What a supervisor reports: its node, the SKUs it can run, and capacity for the specs asked about."""

    node_id: str
    name: str
    skus: list[HardwareSku]
    capacities: dict[str, Capacity] = field(default_factory=dict)
    instances: list[InstanceView] = field(default_factory=list)
    running: int = 0


class _Queued:
    """The job events of one job, queued for its generator."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def started(self, job: Job) -> None:
        self.queue.put_nowait(("started",))

    async def logs(self, job: Job, text: str) -> None:
        self.queue.put_nowait(("logs", text))

    async def output(self, job: Job, output: Any) -> None:
        self.queue.put_nowait(("output", output))

    async def finished(self, job: Job, outcome: Outcome) -> None:
        self.queue.put_nowait(("finished", outcome))


@dataclass(frozen=True)
class NodeConfig:
    """What the API process that creates a supervisor passes on: its runtime settings (sandbox, timeouts,
    limits) and where the installation's storage is."""

    runtime: dict[str, Any]
    storage: dict[str, Any]
    """The installation's storage settings (a bucket: credentials come from the node's own environment)."""
    storage_root: str
    """Without a bucket, the API host's storage directory (one machine or a shared filesystem)."""
    sandbox: dict[str, Any] = field(default_factory=dict)
    """The installation's ``COGPORT_SANDBOX__*`` settings: nodes run models inside the same boundary."""


def node_settings(node_id: str, config: NodeConfig) -> Settings:
    """The settings a supervisor runs with: the node's own environment (its GPUs: ``COGPORT_GPUS``,
    ``COGPORT_RAY__NODE_DIR``), the runtime section of the API process that created it."""
    settings = Settings()
    root = settings.ray.node_dir or Path(tempfile.gettempdir()) / "cogport-node"
    settings.data_dir = root / node_id[:16]
    settings.runtime = RuntimeSettings.model_validate(config.runtime)
    settings.sandbox = SandboxSettings.model_validate(config.sandbox)
    settings.storage = StorageSettings.model_validate(config.storage)
    return settings


class NodeSupervisor:
    """See the module docstring. Methods are coroutines: the actor is an async actor."""

    def __init__(self, node_id: str, config: NodeConfig) -> None:
        self.node_id = node_id
        self.settings = node_settings(node_id, config)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage_root = Path(config.storage_root)
        self._storage: Storage | None = None
        self._prepared: dict[str, VersionSpec] = {}
        self.name = f"{socket.gethostname()}/{node_id[:8]}"
        self.gpus = hardware.inventory(self.settings)
        self.backend = LocalBackend(self.settings, node=self.name)
        self._started: asyncio.Task[None] | None = None
        self._arriving: set[str] = set()
        """Jobs handed here whose version is being prepared (not in the local backend yet)."""
        self._canceled: dict[str, float] = {}
        """Jobs canceled before they were in the local backend (their version being prepared, or their
        ``run`` not arrived yet: Ray does not order one caller's calls to an async actor), and when: they
        end ``canceled`` without running. Forgotten after :data:`CANCELED_TTL` seconds."""

    async def _ready(self) -> LocalBackend:
        if self._started is None:
            self._started = asyncio.ensure_future(self.backend.start())
        await asyncio.shield(self._started)
        return self.backend

    async def pid(self) -> int:
        return os.getpid()

    async def state(self, specs: list[VersionSpec]) -> NodeState:
        backend = await self._ready()
        return NodeState(
            node_id=self.node_id,
            name=self.name,
            skus=hardware.available(self.settings, self.gpus),
            capacities={spec.key: backend.capacity(spec) for spec in specs},
            instances=backend.instances(),
            running=len(backend.running()),
        )

    async def _local(self, spec: VersionSpec) -> VersionSpec:
        """``spec`` with this node's paths: its version prepared here first (once)."""
        local = self._prepared.get(spec.key)
        if local is None:
            if self._storage is None:
                self._storage = (
                    await open_storage(self.settings) if self.settings.storage.url else LocalStorage(self.storage_root)
                )
            prepared = await prepare(self._storage, spec, self.settings.data_dir / "cache", self.settings)
            local = prepared.spec(spec)
            if spec.weights_key:  # trained weights: fetched from storage into this node's cache
                weights = WeightsCache(self._storage, self.settings.data_dir / "cache" / "weights")
                await weights.ensure(spec.weights_key)
                local = replace(local, weights=str(weights.path_for(spec.weights_key)))
            self._prepared[spec.key] = local
        return local

    async def run(self, job: Job) -> AsyncIterator[Event]:
        """Run ``job`` here; yields its events (see :data:`Event`) until it has finished."""
        self._arriving.add(job.prediction_id)
        events = _Queued()
        try:
            backend = await self._ready()
            job = replace(job, spec=await self._local(job.spec))
            if job.prediction_id in self._canceled:
                yield ("finished", Outcome("canceled"))
                return
            await backend.submit(job, events)  # no await before it takes the job: a cancel sees it there
        except BuildError as exc:
            yield ("refused", f"The model could not be prepared on node {self.name}: {exc.message}")
            return
        except CogportError as exc:
            yield ("refused", exc.detail)
            return
        finally:
            self._arriving.discard(job.prediction_id)
            self._canceled.pop(job.prediction_id, None)
        while True:
            event = await events.queue.get()
            yield event
            if event[0] == "finished":
                return

    async def cancel(self, prediction_id: str) -> bool:
        """Cancel a job here; one not in the local backend yet is remembered, and ends ``canceled`` when it
        arrives. True when the job was here (running, or its version being prepared)."""
        backend = await self._ready()
        if prediction_id in backend.running():
            return await backend.cancel(prediction_id)
        now = time.monotonic()
        self._canceled = {key: at for key, at in self._canceled.items() if now - at < CANCELED_TTL}
        self._canceled[prediction_id] = now
        return prediction_id in self._arriving

    async def ensure(self, spec: VersionSpec, minimum: int, maximum: int) -> None:
        backend = await self._ready()
        if minimum == 0 and spec.key not in self._prepared:
            backend.ensure(spec, minimum, maximum)  # nothing to start: no need to prepare
            return
        try:
            backend.ensure(await self._local(spec), minimum, maximum)
        except BuildError as exc:
            log.error("preparing %s on %s failed: %s", spec.version_id, self.name, exc.message)
        except CogportError as exc:
            log.error("preparing %s on %s failed: %s", spec.version_id, self.name, exc.detail)

    async def shutdown(self) -> None:
        """Stop every instance on this node (before the actor is killed: its coglet processes go too)."""
        if self._started is not None:
            await self.backend.stop()
