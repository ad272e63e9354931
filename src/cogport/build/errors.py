"""The one error a build reports: a message for the person who pushed the model."""

from __future__ import annotations


class BuildError(Exception):
    """The model cannot be built; ``message`` says why and what to change."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)
