"""The states of one coglet instance (one ``python -m cog.server.http`` process group).

::

    STARTING ──► READY ◄──► BUSY          (BUSY: every prediction slot is taken)
       │           │         │
       │           └────┬────┘
       ▼                ▼
     FAILED ◄───── (crash, UNHEALTHY, DEFUNCT, unexpected exit)
       │
       ▼
    STOPPING ──► STOPPED                  (any state can be stopped)

``STARTING`` fails on SETUP_FAILED, a setup timeout or an exit before READY. A FAILED instance is
never reused: coglet does not restart its worker, so the pool stops it and starts a new one.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def is_live(self) -> bool:
        """Started (or starting) and not failed: it holds, or will hold, prediction slots."""
        return self in _LIVE

    @property
    def holds_resources(self) -> bool:
        """Its processes may still be running (counted against the pool's capacity)."""
        return self is not InstanceState.STOPPED


_LIVE = frozenset({InstanceState.STARTING, InstanceState.READY, InstanceState.BUSY})
