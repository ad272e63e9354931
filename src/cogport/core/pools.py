"""Whose instances these are (:attr:`cogport.core.jobs.VersionSpec.pool`, :attr:`~cogport.core.jobs.InstanceView.pool`):
a model's on-demand ones (:data:`ON_DEMAND`), or a deployment's (``deployment:<owner>/<name>``). Built and read
here only."""

from __future__ import annotations

__all__ = ["ON_DEMAND", "deployment_of", "deployment_pool"]

ON_DEMAND = ""
"""The pool of a model's on-demand instances (work not sent through a deployment)."""
_DEPLOYMENT = "deployment:"


def deployment_pool(ref: str) -> str:
    """The pool of the deployment ``ref`` (``<owner>/<name>``)."""
    return f"{_DEPLOYMENT}{ref}"


def deployment_of(pool: str) -> str | None:
    """The deployment ref (``<owner>/<name>``) whose pool ``pool`` is; None for on-demand instances."""
    return pool.removeprefix(_DEPLOYMENT) if pool.startswith(_DEPLOYMENT) else None
