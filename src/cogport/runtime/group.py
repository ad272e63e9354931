"""The instances of one version (one :attr:`VersionSpec.key`), its waiting jobs, and its start record.

Restart policy: a failed start (SETUP_FAILED, setup timeout, exit before READY) delays the next
start of the version by ``start_backoff_initial`` seconds, doubling up to ``start_backoff_max``.
After ``setup_attempts`` consecutive failed starts the version is *refused* for
``start_backoff_max`` seconds: its waiting jobs fail with the setup error, ``capacity`` reports it as
``refused`` and ``submit`` raises :class:`~cogport.errors.SetupFailed` until the window ends. A start that reaches
READY clears the record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from cogport.core.backoff import nth
from cogport.core.jobs import Job, JobEvents, VersionSpec
from cogport.core.outcome import Outcome
from cogport.errors import SetupFailed
from cogport.runtime.instance import Instance
from cogport.runtime.scaling import Limits, target
from cogport.runtime.state import InstanceState
from cogport.settings import RuntimeSettings


@dataclass(eq=False)
class Ticket:
    """A submitted job: waiting for a slot, then running in one."""

    job: Job
    events: JobEvents
    group: VersionGroup
    bound: asyncio.Future[Instance | Outcome]
    """Resolved with the instance whose slot the job got, or with an outcome when it ends unrun."""
    instance: Instance | None = None
    canceled: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class VersionGroup:
    spec: VersionSpec
    instances: list[Instance] = field(default_factory=list)
    waiting: deque[Ticket] = field(default_factory=deque)
    failures: int = 0
    """Consecutive failed starts."""
    retry_at: float = 0.0
    """No start before this (monotonic) time."""
    refused_until: float = 0.0
    last_error: SetupFailed | None = None
    replace: bool = False
    """An instance crashed mid-prediction: start a replacement even with nothing waiting."""
    rss_estimate: int = 0
    """The largest resident size seen for an instance of this version (for the memory bound)."""
    started: int = 0
    """Instances started so far (names them)."""
    retry_timer: asyncio.TimerHandle | None = None
    limits: Limits | None = None
    """Set for a deployment's instances (``Pool.ensure``); None: on demand, within the pool's settings."""

    @property
    def key(self) -> str:
        return self.spec.key

    def live(self) -> list[Instance]:
        return [i for i in self.instances if i.state.is_live]

    def free_slots(self) -> int:
        """Slots not yet taken on READY, BUSY and STARTING instances."""
        return sum(i.free_slots for i in self.instances)

    def slack(self) -> int:
        """Slots nobody is waiting for yet (negative: jobs waiting for an instance to start)."""
        return self.free_slots() - len(self.waiting)

    def starting(self) -> bool:
        return any(i.state is InstanceState.STARTING for i in self.instances)

    def ready_with_slot(self) -> Instance | None:
        """The READY instance a waiting job should take: the least loaded one."""
        ready = [i for i in self.instances if i.state is InstanceState.READY]
        return min(ready, key=lambda i: (i.reserved, -i.last_used)) if ready else None

    def in_backoff(self, now: float) -> bool:
        return now < self.retry_at

    def refusal(self, now: float) -> SetupFailed | None:
        """The setup error while the version is refused, else None."""
        if self.last_error is not None and now < self.refused_until:
            return SetupFailed(self.last_error.detail, logs=self.last_error.logs)
        return None

    def can_grow(self, now: float, limits: Limits) -> bool:
        """Whether another instance may be started now: none while backing off or refused, and at most
        ``limits.maximum`` live (starting ones included)."""
        if self.in_backoff(now) or self.refusal(now) is not None:
            return False
        return len(self.live()) < limits.maximum

    def target(self, limits: Limits) -> int:
        """The instances the waiting and running jobs need (see :mod:`cogport.runtime.scaling`)."""
        running = sum(i.reserved for i in self.live())
        return target(len(self.waiting), running, max(1, self.spec.concurrency), limits)

    def needs_start(self, now: float, limits: Limits) -> bool:
        """Whether one more instance should be started now."""
        if not self.can_grow(now, limits):
            return False
        return len(self.live()) < self.target(limits) or (self.replace and not self.live())

    def serving(self) -> bool:
        """Whether an instance of the version is up (READY or BUSY)."""
        return any(i.state in (InstanceState.READY, InstanceState.BUSY) for i in self.instances)

    def start_failed(self, error: SetupFailed, settings: RuntimeSettings, now: float) -> bool:
        """Record a failed start; True when the version is now refused (its waiting jobs must fail).

        A version with an instance up is never refused: only its scale-out backs off.
        """
        self.failures += 1
        self.last_error = error
        self.retry_at = now + nth(settings.start_backoff_initial, settings.start_backoff_max, self.failures)
        if self.failures < settings.setup_attempts or self.serving():
            return False
        self.failures = 0
        self.retry_at = 0.0
        self.refused_until = now + settings.start_backoff_max
        self.replace = False
        return True

    def start_succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.refused_until = 0.0
        self.last_error = None
