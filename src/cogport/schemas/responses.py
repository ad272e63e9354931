"""Response bodies, exactly as Replicate returns them (see ``shared/replicate-openapi.json``).

Built explicitly from rows by :mod:`cogport.api.presenters`; never returned as ORM objects.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Account(Wire):
    type: Literal["user", "organization"]
    username: str
    name: str
    github_url: str | None = None
    avatar_url: str | None = None


class Hardware(Wire):
    sku: str
    name: str


class WebhookSecret(Wire):
    key: str


class Version(Wire):
    id: str
    created_at: str
    cog_version: str
    openapi_schema: dict[str, Any]


class Model(Wire):
    url: str
    owner: str
    name: str
    description: str | None
    visibility: Literal["public", "private"]
    github_url: str | None
    paper_url: str | None
    license_url: str | None
    cover_image_url: str | None
    run_count: int
    default_example: dict[str, Any] | None
    latest_version: Version | None
    is_official: bool = False
    hardware: str
    created_at: str


class CollectionItem(Wire):
    name: str
    slug: str
    description: str


class Collection(CollectionItem):
    full_description: str | None
    models: list[Model]


class Page(BaseModel, Generic[T]):
    next: str | None
    previous: str | None
    results: list[T]


class SearchModel(Wire):
    model: Model
    metadata: dict[str, Any]


class SearchCollection(Wire):
    name: str
    slug: str
    description: str
    models: list[str]


class SearchResult(Wire):
    query: str
    models: list[SearchModel]
    collections: list[SearchCollection]
    pages: list[dict[str, str]]


class Token(Wire):
    """cogport extension: a newly created API token (shown once)."""

    account: str
    token: str
    hint: str
    created_at: str


class TokenInfo(Wire):
    """cogport extension: an API token as admins list it (never the token itself).

    ``hint`` is the token's first three and last four characters; ``revoked_at`` is ``null`` while the
    token works. When a token was last used is not tracked.
    """

    id: int
    account: str
    hint: str
    label: str | None
    created_at: str
    revoked_at: str | None


class AdminAccount(Account):
    """cogport extension: an account as admins see it."""

    is_admin: bool
    members: list[str] | None = None
    created_at: str


class DeploymentConfiguration(Wire):
    hardware: str
    min_instances: int
    max_instances: int


class DeploymentRelease(Wire):
    number: int
    model: str
    version: str
    created_at: str
    created_by: Account
    configuration: DeploymentConfiguration


class Deployment(Wire):
    owner: str
    name: str
    current_release: DeploymentRelease
