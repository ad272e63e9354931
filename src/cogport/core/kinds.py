"""What a run is: a prediction or a training (``Prediction.kind``; both are rows of one table)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

__all__ = ["Mode", "RunKind"]

Mode = Literal["predict", "train"]
"""What a version's instances run: its predictor or its training function."""


class RunKind(StrEnum):
    PREDICTION = "prediction"
    TRAINING = "training"

    @property
    def mode(self) -> Mode:
        """What an instance running this kind of run calls."""
        return "train" if self is RunKind.TRAINING else "predict"
