"""How a run ended: the one shape a backend reports (:meth:`cogport.core.jobs.JobEvents.finished`)
and the lifecycle records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cogport.core.status import FinalStatus

__all__ = ["Outcome"]


@dataclass(frozen=True)
class Outcome:
    """How a run ended. Frozen, and plain enough to pickle (the Ray backend sends it across processes)."""

    status: FinalStatus
    output: Any = None
    error: str | None = None
    logs: str | None = None
    """The run's whole log; None when the backend has none beyond what it streamed."""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def has_output(self) -> bool:
        """Whether the run's end records ``output``: always when it succeeded (``None`` included), and a
        failed or canceled run's only when it has one (else what it streamed stays)."""
        return self.status == "succeeded" or self.output is not None
