"""The app's own metrics, in a :class:`~prometheus_client.CollectorRegistry` of its own (never the global one:
a process may hold several apps, as the test suite does).

Everything here is fed through hooks, never by scattered calls:

* runs: :meth:`Metrics.after_commit`, a ``Transitions.after_commit`` hook (every committed status change);
* HTTP: the access middleware (:mod:`cogport.api.access`);
* cold starts: the runtime pool's ``on_ready`` hook;
* webhooks: the announcer's ``on_outcome`` hook;
* rate limits: the limiter (:mod:`cogport.api.rate_limits`).

Labels never carry ids or tokens: models are ``owner/name``, routes are templates.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from cogport.core.kinds import RunKind
from cogport.core.status import Status
from cogport.lifecycle.status import Announcement

__all__ = ["DURATION_BUCKETS", "Metrics", "run_source"]

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def run_source(kind: str, deployment: str | None) -> str:
    """How a run was made: ``training``, ``deployment`` (a deployment's prediction) or ``api``."""
    if kind == RunKind.TRAINING:
        return "training"
    return "deployment" if deployment else "api"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.predictions = Counter(
            "cogport_predictions",
            "Runs (predictions and trainings) that reached a terminal status, by this process.",
            ["model", "deployment", "status", "source"],
            registry=r,
        )
        self.prediction_duration = Histogram(
            "cogport_prediction_duration_seconds",
            "Run durations by phase: queue (created to started), setup (an instance's spawn to ready), "
            "predict (started to completed), total (created to completed).",
            ["phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.cold_start = Histogram(
            "cogport_instance_cold_start_seconds",
            "Seconds from spawning a model instance to its being ready (setup included).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "cogport_http_requests",
            "HTTP requests answered, by route template.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "cogport_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response, by route template.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "cogport_webhook_deliveries",
            "Webhook attempts by outcome: delivered, retrying (a terminal webhook to be tried again), "
            "failed (not tried again).",
            ["outcome"],
            registry=r,
        )
        self._phases = {phase: self.prediction_duration.labels(phase=phase) for phase in ("queue", "predict", "total")}
        self._ended: dict[tuple[str, str, str, str], Any] = {}
        """The run counter's children by labels: ``labels()`` costs more than the rest of a run's count."""
        self.rate_limited = Counter(
            "cogport_rate_limited",
            "Requests refused with 429 by the per-account rate limits.",
            ["kind"],
            registry=r,
        )

    def after_commit(self, announcement: Announcement) -> None:
        """The ``Transitions`` hook: count each run that ended, and observe its phases."""
        if announcement.kind != "completed":
            return
        row = announcement.prediction
        labels = (row.model_ref, row.deployment or "", Status(row.status).value, run_source(row.kind, row.deployment))
        counter = self._ended.get(labels)
        if counter is None:
            if len(self._ended) >= 10_000:
                self._ended.clear()
            model, deployment, status, source = labels
            counter = self._ended[labels] = self.predictions.labels(
                model=model, deployment=deployment, status=status, source=source
            )
        counter.inc()
        if row.started_at is not None:
            self._phases["queue"].observe(max(0.0, (row.started_at - row.created_at).total_seconds()))
        metrics = row.metrics or {}
        for phase, key in (("predict", "predict_time"), ("total", "total_time")):
            value = metrics.get(key)
            if isinstance(value, int | float):
                self._phases[phase].observe(max(0.0, float(value)))

    def instance_ready(self, seconds: float) -> None:
        """The runtime's ``on_ready`` hook: an instance became ready ``seconds`` after it was spawned."""
        self.cold_start.observe(seconds)
        self.prediction_duration.labels(phase="setup").observe(seconds)

    def rate_limited_hit(self, kind: str) -> None:
        self.rate_limited.labels(kind=kind).inc()

    def webhook_outcome(self, outcome: str) -> None:
        self.webhook_deliveries.labels(outcome=outcome).inc()
