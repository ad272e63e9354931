"""Request bodies. Unknown fields are refused where Replicate's spec refuses them."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from cogport import storable

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


MAX_URL_LENGTH = 500


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """Text that cannot be stored (NUL, lone surrogates: see :mod:`cogport.storable`): say so now
        instead of failing later."""
        if isinstance(value, dict):
            return value  # inputs: checked with the path of each problem (lifecycle.inputs)
        for _where, reason in storable.problems(value, ""):
            raise ValueError(reason)
        return value


def _url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    url = str(HttpUrl(value))
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"URLs can be at most {MAX_URL_LENGTH} characters long")
    return url


class ModelCreate(Action):
    owner: str
    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits, '-', '_' and '.'")
    visibility: Literal["public", "private"]
    hardware: str
    description: str | None = None
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    cover_image_url: str | None = None

    _urls = field_validator("github_url", "paper_url", "license_url", "cover_image_url")(_url)


class ModelUpdate(Action):
    description: str | None = None
    readme: str | None = None
    github_url: str | None = None
    paper_url: str | None = None
    weights_url: str | None = None
    license_url: str | None = None

    _urls = field_validator("github_url", "paper_url", "license_url", "weights_url")(_url)


class AccountCreate(Action):
    """cogport extension: create a user or an organization."""

    username: str = Field(pattern=USERNAME_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    type: Literal["user", "organization"] = "user"
    members: list[str] = Field(default_factory=list)
    is_admin: bool = False
    github_url: str | None = None

    _urls = field_validator("github_url")(_url)


class MembersUpdate(Action):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class TokenCreate(Action):
    label: str | None = Field(default=None, max_length=200)


class TokenRevoke(Action):
    """cogport extension: revoke a token by the token itself (sent in the body, never in a URL)."""

    token: str = Field(min_length=1, max_length=500)


class CollectionCreate(Action):
    """cogport extension: create or replace a collection."""

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    full_description: str | None = None
    models: list[str] = Field(default_factory=list, description="owner/name of each model, in order")

    @field_validator("models")
    @classmethod
    def _refs(cls, value: list[str] | None) -> list[str] | None:
        for ref in value or ():
            if not re.fullmatch(r"[^/\s]+/[^/\s]+", ref):
                raise ValueError(f"{ref!r} is not of the form owner/name")
        return value


class CollectionUpdate(Action):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    full_description: str | None = None
    models: list[str] | None = None

    _refs = field_validator("models")(CollectionCreate._refs.__func__)  # type: ignore[attr-defined]

    @field_validator("name", "description", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        """Leave a field out to keep it; these two cannot be cleared."""
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


WebhookEvent = Literal["start", "output", "logs", "completed"]


class RunCreate(Action):
    """Fields every create-a-run endpoint takes (predictions through a model or a deployment)."""

    input: dict[str, Any]
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    webhook_completed: str | None = None
    stream: bool | None = None

    @field_validator("webhook", "webhook_completed")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        url = HttpUrl(value)
        if url.scheme not in ("http", "https"):
            raise ValueError("webhook must be an http or https URL")
        return str(url)


class PredictionCreate(RunCreate):
    version: str = Field(min_length=1, max_length=300)


class TrainingCreate(Action):
    destination: str = Field(min_length=3, max_length=300)
    input: dict[str, Any]
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    webhook_completed: str | None = None

    _webhook_url = field_validator("webhook", "webhook_completed")(RunCreate._webhook_url.__func__)  # type: ignore[attr-defined]


class DeploymentCreate(Action):
    """``POST /v1/deployments``. ``name`` may be ``owner/name`` (the JS client sends what it is given);
    ``owner`` is a cogport extension. Without either, the deployment is the caller's."""

    name: str = Field(min_length=1, max_length=201)
    model: str = Field(min_length=3, max_length=201)
    version: str = Field(min_length=1, max_length=300)
    hardware: str = Field(min_length=1, max_length=64)
    min_instances: int = Field(ge=0, le=5)
    max_instances: int = Field(ge=0, le=20)
    owner: str | None = Field(default=None, max_length=64)

    def owner_and_name(self) -> tuple[str | None, str]:
        if "/" in self.name:
            owner, _, name = self.name.partition("/")
            return owner, name
        return self.owner, self.name

    @field_validator("name")
    @classmethod
    def _deployment_name(cls, value: str) -> str:
        name = value.rpartition("/")[2]
        if not re.match(NAME_PATTERN, name) or value.count("/") > 1:
            raise ValueError("a deployment name has lowercase letters, digits, '-', '_' and '.' (or is owner/name)")
        return value


class DeploymentUpdate(Action):
    """``PATCH /v1/deployments/{owner}/{name}``: any of the release's fields."""

    version: str | None = Field(default=None, min_length=1, max_length=300)
    hardware: str | None = Field(default=None, min_length=1, max_length=64)
    min_instances: int | None = Field(default=None, ge=0, le=5)
    max_instances: int | None = Field(default=None, ge=0, le=20)
