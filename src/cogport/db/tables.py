"""ORM rows. Wire shapes live in :mod:`cogport.schemas`; these are storage only.

All state lives here, so several API processes (and, later, Ray workers) can share one database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime  # TypeDecorator says ``object``; keyset cursors check their keys against this

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType, Any: JSONType}


class Account(Base):
    """A user or an organization."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16), default="user")
    github_url: Mapped[str | None] = mapped_column(String(500))
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"

    organization_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)


class ApiToken(Base):
    """An API token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_models_latest", "latest_version_created_at", "id"),
        Index("ix_models_created", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(16))
    hardware: Mapped[str] = mapped_column(String(64), default="cpu")
    github_url: Mapped[str | None] = mapped_column(String(1000))
    paper_url: Mapped[str | None] = mapped_column(String(1000))
    license_url: Mapped[str | None] = mapped_column(String(1000))
    cover_image_url: Mapped[str | None] = mapped_column(String(1000))
    weights_url: Mapped[str | None] = mapped_column(String(1000))
    readme: Mapped[str | None] = mapped_column(Text)
    run_count: Mapped[int] = mapped_column(BigInteger, default=0)
    default_example_id: Mapped[str | None] = mapped_column(String(32))
    latest_version_pk: Mapped[int | None] = mapped_column(Integer)
    latest_version_created_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Version(Base):
    """An immutable, content-addressed version of a model.

    ``id`` is the 64-hex public id: a hash of the model and the pushed files (see
    :func:`cogport.build.packing.version_id`), so it names one model. ``pk`` is the row key: versions
    pushed before ids included the model can share an id across models, each with its own row.
    """

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("model_id", "id"),
        Index("ix_versions_model_created", "model_id", "created_at", "pk"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cog_version: Mapped[str] = mapped_column(String(32), default="")
    openapi_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    python_version: Mapped[str | None] = mapped_column(String(16))
    predict_ref: Mapped[str | None] = mapped_column(String(300))
    train_ref: Mapped[str | None] = mapped_column(String(300))
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    gpu: Mapped[bool] = mapped_column(Boolean, default=False)
    source_path: Mapped[str | None] = mapped_column(String(1000))
    venv_path: Mapped[str | None] = mapped_column(String(1000))
    weights_key: Mapped[str | None] = mapped_column(String(500))
    """Storage key of trained weights, passed to ``setup()`` via ``COG_WEIGHTS``."""
    base_version_pk: Mapped[int | None] = mapped_column(Integer)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)


class Build(Base):
    """One push: the build of a model directory into a version."""

    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="starting")
    logs: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    version_id: Mapped[str | None] = mapped_column(String(64))
    content_id: Mapped[str | None] = mapped_column(String(64))
    """The pushed files' content id (keys the published source); ``None`` for builds from before it."""
    source_path: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    lease_expires_at: Mapped[datetime | None] = mapped_column()


class Prediction(Base):
    """A prediction or a training (``kind``): the queue row and the Replicate object at once."""

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_queue", "status", "created_at"),
        Index("ix_predictions_account_created", "account_id", "kind", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="prediction")
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version_pk: Mapped[int] = mapped_column(ForeignKey("versions.pk", ondelete="CASCADE"), index=True)
    model_ref: Mapped[str] = mapped_column(String(200))
    version_ref: Mapped[str] = mapped_column(String(64))
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output: Mapped[Any | None] = mapped_column()
    logs: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="starting")
    source: Mapped[str] = mapped_column(String(8), default="api")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook: Mapped[str | None] = mapped_column(String(2000))
    webhook_events_filter: Mapped[list[str] | None] = mapped_column(JSONType)
    deadline: Mapped[datetime | None] = mapped_column()
    deployment: Mapped[str | None] = mapped_column(String(200))
    stream_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    destination_model_id: Mapped[int | None] = mapped_column(Integer)
    output_version_pk: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class StoredFile(Base):
    """An uploaded file (Files API) or a prediction's output file."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="upload")
    prediction_id: Mapped[str | None] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str] = mapped_column(String(32))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    storage_key: Mapped[str] = mapped_column(String(500))
    access_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()


class WebhookDelivery(Base):
    """A terminal webhook waiting to be (re)delivered; survives restarts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64))
    prediction_id: Mapped[str] = mapped_column(String(32), index=True)
    account_id: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    full_description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CollectionModel(Base):
    __tablename__ = "collection_models"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Instance(Base):
    """A running (or recently running) model instance, for status and multi-process visibility."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_pk: Mapped[int] = mapped_column(Integer, index=True)
    mode: Mapped[str] = mapped_column(String(16), default="predict")
    node: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    rss_mb: Mapped[float] = mapped_column(Float, default=0.0)


class Deployment(Base):
    """A named, configured release of one model version (Replicate's deployments).

    The current release lives in the row itself (``release_*``): the API shows only the current one,
    and each update replaces it and bumps ``release_number``.
    """

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_deployments_owner_created", "owner_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version_pk: Mapped[int] = mapped_column(ForeignKey("versions.pk", ondelete="CASCADE"), index=True)
    hardware: Mapped[str] = mapped_column(String(64))
    min_instances: Mapped[int] = mapped_column(Integer, default=0)
    max_instances: Mapped[int] = mapped_column(Integer, default=1)
    release_number: Mapped[int] = mapped_column(Integer, default=1)
    release_created_at: Mapped[datetime] = mapped_column(default=utcnow)
    release_created_by_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    """When a prediction was last created through the deployment."""
    offline_since: Mapped[datetime | None] = mapped_column()
    """Since when ``min_instances`` has been 0 (None while it is above): delete's offline rule reads it."""


class RateLimitWindow(Base):
    """Requests of one account and kind in one fixed window (a minute), shared by every API process.

    One UPSERT per request increments ``count`` and returns it (:mod:`cogport.ops.rate_limits`); windows
    before the previous one are deleted as time moves on."""

    __tablename__ = "rate_limit_windows"

    account_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    """``create`` or ``request``."""
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """The window's start, in seconds since the epoch (a multiple of its length)."""
    count: Mapped[int] = mapped_column(Integer, default=0)


class WebSession(Base):
    """A signed-in browser (the playground, :mod:`cogport.web`): its cookie's SHA-256 and the API token it
    was opened with. Revoking the token ends its sessions; signing out deletes the row."""

    __tablename__ = "web_sessions"

    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
