"""A prediction's (or training's) status; the transitions and their only writer are in
:mod:`cogport.lifecycle.status`."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

__all__ = ["ACTIVE", "TERMINAL", "FinalStatus", "Status"]


class Status(StrEnum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.ABORTED})
ACTIVE = (Status.STARTING, Status.PROCESSING)
"""The statuses of a run that has not ended."""

FinalStatus = Literal["succeeded", "failed", "canceled"]
"""How a run a backend took can end (``aborted`` is decided before one takes it)."""
