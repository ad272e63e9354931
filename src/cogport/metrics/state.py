"""Gauges computed at scrape time: the queue (from the database: the same from every process) and this
process's instances (from its backend)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from cogport.core.jobs import InstanceView
from cogport.db.engine import Database
from cogport.db.tables import Prediction

__all__ = ["Scrape", "StateSnapshot", "snapshot"]


@dataclass(frozen=True)
class StateSnapshot:
    queue: dict[tuple[str, str], int]
    """Runs waiting to start (``starting``) by ``(model, deployment)``."""
    instances: dict[tuple[str, str], int]
    """Instances by ``(hardware, state)``."""


async def snapshot(database: Database, instances: Iterable[InstanceView]) -> StateSnapshot:
    query = (
        select(Prediction.model_ref, Prediction.deployment, func.count())
        .where(Prediction.status == "starting")
        .group_by(Prediction.model_ref, Prediction.deployment)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    queue = {(model, deployment or ""): int(count) for model, deployment, count in rows}
    by_state: Counter[tuple[str, str]] = Counter((view.hardware, str(view.state)) for view in instances)
    return StateSnapshot(queue=queue, instances=dict(by_state))


class StateCollector(Collector):
    def __init__(self, state: StateSnapshot) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "cogport_queue_depth",
            "Runs waiting to start, by model and deployment (from the database: every process reports the same).",
            labels=["model", "deployment"],
        )
        for (model, deployment), count in sorted(self.state.queue.items()):
            queue.add_metric([model, deployment], count)
        yield queue
        instances = GaugeMetricFamily(
            "cogport_instances",
            "This process's model instances, by hardware and state (starting, idle, busy, stopping).",
            labels=["hardware", "state"],
        )
        for (hardware, state), count in sorted(self.state.instances.items()):
            instances.add_metric([hardware, state], count)
        yield instances


class Scrape(Collector):
    """One scrape: the app's registry plus the gauges of ``state`` (a collector of its own per scrape, so
    concurrent scrapes never share a snapshot)."""

    def __init__(self, registry: CollectorRegistry, state: StateSnapshot) -> None:
        self.registry = registry
        self.state = StateCollector(state)

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.state.collect()
