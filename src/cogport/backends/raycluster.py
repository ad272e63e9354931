"""The Ray backend: models run on the nodes of an existing Ray cluster (``COGPORT_BACKEND=ray``).

Each API process joins the cluster as a driver (``COGPORT_RAY__ADDRESS``) and makes sure every live node has
its :class:`~cogport.backends.supervisor.NodeSupervisor` (a detached actor named ``cogport-node-<node id>``,
pinned to the node with a hard node affinity, ``num_cpus=0``; made with ``get_if_exists`` so API processes
share them). Every ``refresh_interval`` it reads each node's state: the SKUs it can run (``/v1/hardware`` is
their union), its instances, and its capacity for the specs the dispatcher asked about. The dispatcher's
synchronous questions (``capacity``, ``waiting``, ``running``) are answered from that picture.

A job goes to the node with the most free slots for its spec (spreading work), else to the least loaded node
that has its hardware; its events come back through a streaming generator. A node lost with a job on it:

* the job had started: it ends ``failed`` (the node was lost) — the model may have had side effects;
* it had not: it is handed to another node (it never ran), up to :data:`MAX_ATTEMPTS` times.

File outputs come back inline (``data:`` URLs: the nodes run coglet without ``--upload-url``) and are kept
by this process's file sink, in object storage when the installation has one.

Deployments (``ensure``): the minimum and the maximum are spread over the nodes that have the SKU, round
robin in node order, no node given more instances than it has GPUs for; re-spread on every call, so a lost
node's minimum is placed on the others.

Ray runs whatever a client that reaches its ports asks (jobs, tasks, actors) as the user Ray runs as, so the
backend refuses to start unless this process joins with Ray's token authentication (:func:`ray_auth_problem`),
or ``COGPORT_RAY__ALLOW_UNAUTHENTICATED`` says to go on without (a warning). The supervisors need nothing from
here: Ray's workers inherit their raylet's ``RAY_AUTH_*`` environment, and models get none of it (the sandbox
gives them a computed environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cogport import hardware
from cogport.backends.supervisor import NodeConfig, NodeState, NodeSupervisor
from cogport.core.jobs import Capacity, InstanceView, Job, JobEvents, OutputFileSink, VersionSpec
from cogport.core.outcome import Outcome
from cogport.errors import BackendUnavailable, Conflict
from cogport.runtime.instance import file_list_output, output_schema
from cogport.settings import HardwareSku, Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
INTEREST_TTL = 120.0
"""Seconds a spec's capacity keeps being read after the dispatcher last asked about it."""
ENSURE_AGAIN = 10.0
"""Seconds after which a node is sent its deployments' bounds again, unchanged."""
LOST = "The node running this prediction was lost ({reason}); please run it again."
UNAUTHENTICATED = (
    "COGPORT_BACKEND=ray needs Ray's token authentication, and this process has none: {problem}. Set "
    "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<a file holding the cluster's token> in the environment of "
    'the Ray head, of every node and of every API process (docs/cluster.md, "Running a cluster safely"), or '
    "COGPORT_RAY__ALLOW_UNAUTHENTICATED=true to run without: then anything that reaches the cluster, model code "
    "on a node included, can run code on every node"
)


def ray_auth_problem(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """Why this process would join a Ray cluster without token authentication; None: it would not.

    As Ray (2.52 and later) reads it: ``RAY_AUTH_MODE=token`` turns it on; the token is ``RAY_AUTH_TOKEN`` if
    set, else the file ``RAY_AUTH_TOKEN_PATH`` names (unreadable or empty: Ray aborts), else
    ``~/.ray/auth_token``. Ray trims the file's surrounding whitespace.
    """
    env = os.environ if environ is None else environ
    mode = env.get("RAY_AUTH_MODE", "")
    if mode.strip().lower() != "token":
        return f"RAY_AUTH_MODE is {mode!r}, not 'token'" if mode else "RAY_AUTH_MODE is not set"
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return None
    named = env.get("RAY_AUTH_TOKEN_PATH", "")
    if named:
        return None if _token_in(Path(named)) else f"RAY_AUTH_TOKEN_PATH={named} cannot be read or is empty"
    if home is None:
        try:
            home = Path.home()
        except RuntimeError:  # no HOME and no passwd entry
            return "RAY_AUTH_TOKEN and RAY_AUTH_TOKEN_PATH are not set, and there is no home directory"
    default = home / ".ray" / "auth_token"
    if _token_in(default):
        return None
    return f"RAY_AUTH_TOKEN and RAY_AUTH_TOKEN_PATH are not set, and {default} cannot be read or is empty"


def _token_in(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except (OSError, UnicodeDecodeError):
        return False


@dataclass
class _Node:
    node_id: str
    handle: Any
    state: NodeState | None = None
    submitted: dict[str, int] = field(default_factory=dict)
    """Jobs handed to it per spec key since its state was last read (its capacity is that much less)."""
    ensured: dict[str, tuple[tuple[int, int], float]] = field(default_factory=dict)
    """The instance bounds last sent to it per spec key, and when: sent again when they change, or after
    :data:`ENSURE_AGAIN` seconds (a restarted supervisor has forgotten them)."""

    def known(self, spec: VersionSpec) -> Capacity | None:
        """Its capacity for ``spec`` as last read (None: not read yet)."""
        return self.state.capacities.get(spec.key) if self.state is not None else None

    def free(self, spec: VersionSpec) -> int:
        """Jobs for ``spec`` it would start now: as last read, less what was handed to it since."""
        known = self.known(spec)
        if known is None or known.refused is not None:
            return 0
        return max(0, known.free - self.submitted.get(spec.key, 0))


@dataclass
class _Flight:
    job: Job
    events: JobEvents
    node: str
    started: bool = False
    cancel_requested: bool = False
    """Canceled before its node had it: the cancel is sent again once it starts there."""
    task: asyncio.Task[None] | None = None


class RayBackend:
    """The :class:`~cogport.backends.base.Backend` on a Ray cluster (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        file_sink: OutputFileSink | None = None,
        on_capacity: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.file_sink = file_sink
        self.on_capacity = on_capacity
        self._nodes: dict[str, _Node] = {}
        self._flights: dict[str, _Flight] = {}
        self._interest: dict[str, tuple[VersionSpec, float]] = {}
        self._ensured: dict[str, tuple[VersionSpec, int, int]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_now = asyncio.Event()
        self._stopping = False
        self._actor: Any = None
        self.node_config = NodeConfig(
            runtime=settings.runtime.model_dump(mode="json"),
            storage=settings.storage.model_dump(mode="json"),
            storage_root=str(settings.data_dir / "files"),
            sandbox=settings.sandbox.model_dump(mode="json"),
        )

    # --- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - the cluster extra is missing
            raise BackendUnavailable("COGPORT_BACKEND=ray needs Ray: pip install 'cogport[cluster]'") from exc
        if not self.settings.ray.address:
            raise BackendUnavailable("COGPORT_BACKEND=ray needs COGPORT_RAY__ADDRESS (the cluster's head, host:port)")
        self._check_auth()
        if not ray.is_initialized():
            await asyncio.to_thread(
                ray.init,
                address=self.settings.ray.address,
                namespace=self.settings.ray.namespace,
                log_to_driver=False,
                configure_logging=False,
            )
        self._actor = ray.remote(NodeSupervisor)
        self._stopping = False
        await self._refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="cogport-ray-refresh")

    def _check_auth(self) -> None:
        """Refuse to join without Ray's token authentication, unless the operator allowed it (a warning)."""
        problem = ray_auth_problem()
        if problem is not None:
            if not self.settings.ray.allow_unauthenticated:
                raise BackendUnavailable(UNAUTHENTICATED.format(problem=problem))
            log.warning(
                "COGPORT_RAY__ALLOW_UNAUTHENTICATED=true: joining the Ray cluster at %s without token "
                "authentication (%s). Any process able to reach the cluster's ports, model code on a node "
                "included, can run code on every node as the user Ray runs as (docs/cluster.md)",
                self.settings.ray.address,
                problem,
            )
        if not self.settings.runtime.sandbox:
            log.warning(
                "COGPORT_RUNTIME__SANDBOX is off: model code on the Ray nodes runs as the node's user, with its "
                "environment (the Ray token included), so it can run code on the whole cluster"
            )

    async def stop(self) -> None:
        """Stop following jobs: those running end ``failed`` (this process stopped); the nodes' instances
        stay up for the other API processes and idle out."""
        self._stopping = True  # Python 3.11's wait_for can swallow the cancel below: the loop checks this too
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        flights = list(self._flights.values())
        for flight in flights:
            node = self._nodes.get(flight.node)
            if node is not None:
                with contextlib.suppress(Exception):
                    await node.handle.cancel.remote(flight.job.prediction_id)
            if flight.task is not None:
                flight.task.cancel()
        for flight in flights:
            if flight.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await flight.task
            await self._end(flight, "The prediction was interrupted because the server running it stopped.")
        self._flights.clear()

    # --- the picture of the cluster ------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), self.settings.ray.refresh_interval)
            self._refresh_now.clear()
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the Ray cluster's state failed")

    async def _refresh(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = {node["NodeID"] for node in await asyncio.to_thread(ray.nodes) if node.get("Alive")}
        for node_id in list(self._nodes):
            if node_id not in alive:
                log.warning("Ray node %s is gone", node_id)
                del self._nodes[node_id]
        for node_id in alive - self._nodes.keys():
            handle = self._actor.options(
                name=f"cogport-node-{node_id}",
                namespace=self.settings.ray.namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_concurrency=10_000,
                max_restarts=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(node_id, self.node_config)
            self._nodes[node_id] = _Node(node_id, handle)
        now = time.monotonic()
        self._interest = {key: (spec, at) for key, (spec, at) in self._interest.items() if now - at < INTEREST_TTL}
        specs = [spec for spec, _ in self._interest.values()]
        nodes = list(self._nodes.values())
        states = await asyncio.gather(*(node.handle.state.remote(specs) for node in nodes), return_exceptions=True)
        changed = False
        for node, state in zip(nodes, states, strict=True):
            if isinstance(state, BaseException):
                # its supervisor is gone or unreachable: no work goes there, and the next refresh looks it
                # up (or makes it) again
                log.info("Ray node %s did not answer: %s", node.node_id, state)
                self._nodes.pop(node.node_id, None)
                changed = True
                continue
            changed = changed or node.state != state
            node.state = state
            node.submitted.clear()
        self._apply_ensured()
        if changed and self.on_capacity is not None:
            self.on_capacity()

    def _eligible(self, spec: VersionSpec) -> list[_Node]:
        return [
            node
            for node in sorted(self._nodes.values(), key=lambda n: n.node_id)
            if node.state is not None and any(sku.sku == spec.hardware for sku in node.state.skus)
        ]

    def hardware(self) -> list[HardwareSku]:
        """The union of the nodes' SKUs (``cpu`` first), plus the operator's additions."""
        seen: dict[str, HardwareSku] = {hardware.CPU: HardwareSku(sku=hardware.CPU, name="CPU")}
        for node in self._nodes.values():
            for sku in node.state.skus if node.state is not None else []:
                seen.setdefault(sku.sku, sku)
        for sku in self.settings.hardware:
            seen.setdefault(sku.sku, sku)
        return list(seen.values())

    # --- the Backend protocol ------------------------------------------------------------------

    def has_capacity(self, spec: VersionSpec) -> bool:
        return self.capacity(spec).free > 0

    def capacity(self, spec: VersionSpec) -> Capacity:
        if spec.key not in self._interest:
            self._refresh_now.set()  # not read yet: read it now; the dispatcher hears when it is
        self._interest[spec.key] = (spec, time.monotonic())
        eligible = self._eligible(spec)
        if not eligible:
            if any(node.state is not None for node in self._nodes.values()):
                return Capacity(0, refused=f"No node of the cluster has the hardware {spec.hardware!r}")
            return Capacity(0)
        refusals = [known for node in eligible if (known := node.known(spec)) is not None and known.refused]
        if refusals and len(refusals) == len(eligible):
            return refusals[0]
        return Capacity(sum(node.free(spec) for node in eligible))

    def waiting(self, spec: VersionSpec) -> int:
        return sum(1 for f in self._flights.values() if f.job.spec.key == spec.key and not f.started)

    def running(self) -> set[str]:
        return set(self._flights)

    def instances(self) -> list[InstanceView]:
        return [view for node in self._nodes.values() if node.state is not None for view in node.state.instances]

    async def submit(self, job: Job, events: JobEvents) -> None:
        if job.prediction_id in self._flights:
            raise Conflict(f"Prediction {job.prediction_id} is already running")
        node = self._place(job.spec, exclude=set())
        if node is None:
            raise BackendUnavailable(f"No node of the cluster can run {job.spec.hardware!r} now")
        flight = _Flight(job, events, node.node_id)
        self._flights[job.prediction_id] = flight
        flight.task = asyncio.create_task(self._follow(flight), name=f"cogport-ray-{job.prediction_id}")

    def _place(self, spec: VersionSpec, exclude: set[str]) -> _Node | None:
        """The node with the most free slots for ``spec``, else the least busy one that has its SKU."""
        eligible = [node for node in self._eligible(spec) if node.node_id not in exclude]
        if not eligible:
            return None

        def load(node: _Node) -> int:
            mine = sum(1 for f in self._flights.values() if f.node == node.node_id)
            return (node.state.running if node.state is not None else 0) + mine

        best = max(eligible, key=lambda node: (node.free(spec), -load(node)))
        best.submitted[spec.key] = best.submitted.get(spec.key, 0) + 1
        return best

    async def cancel(self, prediction_id: str) -> bool:
        flight = self._flights.get(prediction_id)
        node = self._nodes.get(flight.node) if flight is not None else None
        if flight is None or node is None:
            return False
        try:
            canceled = bool(await node.handle.cancel.remote(prediction_id))
        except Exception as exc:
            log.info("canceling %s on %s failed: %s", prediction_id, flight.node, exc)
            return False
        if not canceled and not flight.started:
            # handed over, not on the node yet: the node ends it canceled when it arrives (it may have by
            # now), or it is canceled again once it starts there
            flight.cancel_requested = True
            return True
        return canceled

    def ensure(self, spec: VersionSpec, minimum: int, maximum: int) -> None:
        self._ensured[spec.key] = (spec, minimum, maximum)
        self._interest[spec.key] = (spec, time.monotonic())
        self._apply_ensured()

    def _apply_ensured(self) -> None:
        now = time.monotonic()
        for key, (spec, minimum, maximum) in list(self._ensured.items()):
            nodes = self._eligible(spec)
            if not nodes:
                continue
            limits = [_instances_for(node, spec) for node in nodes]
            lows = _spread(minimum, limits)
            highs = _spread(maximum, limits)
            for node, low, high in zip(nodes, lows, highs, strict=True):
                bounds = (low, max(low, high))
                sent = node.ensured.get(key)
                if sent is None or sent[0] != bounds or now - sent[1] > ENSURE_AGAIN:
                    node.ensured[key] = (bounds, now)
                    node.handle.ensure.remote(spec, *bounds)
            if minimum == 0 and maximum == 0:
                del self._ensured[key]

    # --- following a job -----------------------------------------------------------------------

    async def _follow(self, flight: _Flight) -> None:
        from ray.exceptions import RayError

        tried: set[str] = set()
        try:
            for _attempt in range(MAX_ATTEMPTS):
                node = self._nodes.get(flight.node)
                if node is None:
                    reason = "it left the cluster"
                else:
                    try:
                        await self._events(flight, node)
                        return
                    except RayError as exc:
                        reason = type(exc).__name__
                        log.warning("Ray node %s lost %s: %s", flight.node, flight.job.prediction_id, exc)
                if flight.started:
                    await self._end(flight, LOST.format(reason=reason))
                    return
                tried.add(flight.node)
                self._refresh_now.set()
                retry = self._place(flight.job.spec, exclude=tried)
                if retry is None:
                    break
                log.info("running %s again on %s (it had not started)", flight.job.prediction_id, retry.node_id)
                flight.node = retry.node_id
            await self._end(flight, LOST.format(reason="no other node could take it"))
        finally:
            self._flights.pop(flight.job.prediction_id, None)
            self._refresh_now.set()

    async def _events(self, flight: _Flight, node: _Node) -> None:
        job, events = flight.job, flight.events
        generator = node.handle.run.options(num_returns="streaming").remote(job)
        async for ref in generator:
            event = await ref
            kind = event[0]
            if kind == "started":
                flight.started = True
                if flight.cancel_requested:
                    with contextlib.suppress(Exception):  # a lost node shows on the generator
                        await node.handle.cancel.remote(job.prediction_id)
                await events.started(job)
            elif kind == "logs":
                await events.logs(job, event[1])
            elif kind == "output":
                await events.output(job, await self._kept(job, event[1]))
            elif kind == "refused":
                await events.finished(job, Outcome("failed", error=event[1]))
                return
            elif kind == "finished":
                outcome: Outcome = event[1]
                await events.finished(job, replace(outcome, output=await self._kept(job, outcome.output)))
                return
        raise BackendUnavailable("the node ended the job without a result")

    async def _end(self, flight: _Flight, error: str) -> None:
        self._flights.pop(flight.job.prediction_id, None)
        await flight.events.finished(flight.job, Outcome("failed", error=error))

    async def _kept(self, job: Job, output: Any) -> Any:
        """File outputs (``data:`` URLs from the node) kept as output files, in the model's order."""
        if self.file_sink is None or not _has_files(job.spec):
            return output
        if isinstance(output, str) and output.startswith("data:"):
            return await self.file_sink.keep(output, 0)
        if isinstance(output, list):
            return [
                await self.file_sink.keep(item, index) if isinstance(item, str) and item.startswith("data:") else item
                for index, item in enumerate(output)
            ]
        return output


def _has_files(spec: VersionSpec) -> bool:
    schema = output_schema(spec)
    return schema.get("format") == "uri" or file_list_output(schema)


def _instances_for(node: _Node, spec: VersionSpec) -> int:
    """How many instances of ``spec`` ``node`` could hold at once (its GPUs; CPU: no bound here)."""
    _, count = hardware.parse_sku(spec.hardware)
    if count == 0 or node.state is None:
        return 1 << 30
    gpus_of_type = max((_sku_multiple(sku.sku, spec.hardware) for sku in node.state.skus), default=0)
    return max(0, gpus_of_type // count) if gpus_of_type else 0


def _sku_multiple(sku: str, wanted: str) -> int:
    """The number of GPUs of ``wanted``'s type that ``sku`` (one of a node's) shows the node has."""
    base, count = hardware.parse_sku(sku)
    wanted_base, _ = hardware.parse_sku(wanted)
    return count if base == wanted_base else 0


def _spread(total: int, limits: list[int]) -> list[int]:
    """``total`` instances over nodes round robin, none above its limit (what does not fit is dropped)."""
    shares = [0] * len(limits)
    left = total
    while left > 0 and any(share < limit for share, limit in zip(shares, limits, strict=True)):
        for index, limit in enumerate(limits):
            if left > 0 and shares[index] < limit:
                shares[index] += 1
                left -= 1
    return shares
