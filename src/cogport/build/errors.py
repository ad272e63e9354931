"""The errors of building and preparing versions, each with a message for a person.

::

    BuildError              the model cannot be built (push time); ``message`` says why and what to change
    └── PrepareFailed       a node cannot prepare a version it did not build (:mod:`cogport.build.prepare`)
        └── BundleMissing   storage holds no bundle for the version
"""

from __future__ import annotations


class BuildError(Exception):
    """The model cannot be built; ``message`` says why and what to change."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class PrepareFailed(BuildError):
    """A node cannot prepare a version: its bundle is damaged, or the environment does not build here."""


class BundleMissing(PrepareFailed):
    """Storage holds no bundle (or no manifest) for the version."""
