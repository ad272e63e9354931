"""The build object: cogport's extension for ``cogport push`` (Replicate has no public build API)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class BuildUrls(BaseModel):
    model_config = ConfigDict(extra="forbid")

    get: str


class Build(BaseModel):
    """One push of a model directory; ``version`` is set once it succeeded."""

    model_config = ConfigDict(extra="forbid")

    id: str
    model: str
    status: Literal["starting", "processing", "succeeded", "failed"]
    version: str | None
    error: str | None
    logs: str
    created_at: str
    started_at: str | None
    completed_at: str | None
    urls: BuildUrls
