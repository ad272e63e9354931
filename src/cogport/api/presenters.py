"""Rows to wire objects, explicitly (see :mod:`cogport.schemas.responses`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cogport.core.jobs import InstanceView
from cogport.core.kinds import RunKind
from cogport.db.tables import Account, Collection, Model, Prediction, Version
from cogport.files import urls as file_urls
from cogport.ops import models as model_ops
from cogport.ops.deployments import Detail
from cogport.schemas import responses as r
from cogport.settings import Settings

STREAM_PATH = "/v1/streams"


def timestamp(value: datetime | None) -> str | None:
    """``2026-01-02T03:04:05.678901Z``: as ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` writes it, in a third of its
    time (three a run, on every view of one)."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    if utc.year < 1000:  # strftime does not pad the year to four digits
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (f-string formatting is slower here)
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
    )


def account(row: Account) -> r.Account:
    return r.Account(
        type="organization" if row.type == "organization" else "user",
        username=row.username,
        name=row.name or row.username,
        github_url=row.github_url,
        avatar_url=row.avatar_url,
    )


def version(row: Version) -> r.Version:
    return r.Version(
        id=row.id,
        created_at=timestamp(row.created_at) or "",
        cog_version=row.cog_version or "",
        openapi_schema=row.openapi_schema or {},
    )


def model(row: Model, owner: Account, latest: Version | None, base_url: str) -> r.Model:
    return r.Model(
        url=f"{base_url}/{owner.username}/{row.name}",
        owner=owner.username,
        name=row.name,
        description=row.description,
        visibility="public" if row.visibility == "public" else "private",
        github_url=row.github_url,
        paper_url=row.paper_url,
        license_url=row.license_url,
        cover_image_url=row.cover_image_url,
        run_count=row.run_count,
        default_example=None,
        latest_version=version(latest) if latest is not None else None,
        hardware=row.hardware,
        created_at=timestamp(row.created_at) or "",
    )


def deployment(detail: Detail) -> r.Deployment:
    row = detail.deployment
    return r.Deployment(
        owner=detail.owner.username,
        name=row.name,
        current_release=r.DeploymentRelease(
            number=row.release_number,
            model=detail.model_ref,
            version=detail.version_id,
            created_at=timestamp(row.release_created_at) or "",
            created_by=account(detail.created_by),
            configuration=r.DeploymentConfiguration(
                hardware=row.hardware, min_instances=row.min_instances, max_instances=row.max_instances
            ),
        ),
    )


def collection_item(row: Collection) -> r.CollectionItem:
    return r.CollectionItem(name=row.name, slug=row.slug, description=row.description or "")


def collection(row: Collection, models: list[r.Model]) -> r.Collection:
    return r.Collection(
        name=row.name,
        slug=row.slug,
        description=row.description or "",
        full_description=row.full_description,
        models=models,
    )


async def models(session: AsyncSession, rows: list[Model], base_url: str) -> list[r.Model]:
    """Present many models with two batched lookups (owners, latest versions)."""
    owners = await model_ops.owners(session, rows)
    latest = await model_ops.latest_versions(session, rows)
    return [
        model(
            row,
            owners[row.owner_id],
            latest.get(row.latest_version_pk) if row.latest_version_pk is not None else None,
            base_url,
        )
        for row in rows
    ]


def prediction(
    row: Prediction, base_url: str, *, aborted_as: str = "aborted", stream_path: str | None = None
) -> dict[str, Any]:
    """A prediction (or training) as Replicate returns it. Null timestamps are left out (the spec
    types them as strings), ``urls`` holds strings only (the Python client requires it)."""
    collection = "trainings" if row.kind == RunKind.TRAINING else "predictions"
    urls = {
        "get": f"{base_url}/v1/{collection}/{row.id}",
        "cancel": f"{base_url}/v1/{collection}/{row.id}/cancel",
        "web": f"{base_url}/p/{row.id}",
    }
    if row.stream_token and stream_path is not None:
        urls["stream"] = f"{base_url}{stream_path}/{row.stream_token}"
    status = row.status
    if status == "aborted" and aborted_as != "aborted":
        status = aborted_as
    body: dict[str, Any] = {
        "id": row.id,
        "model": row.model_ref,
        "version": row.version_ref,
        "input": row.input,
        "output": row.output,
        "logs": row.logs or "",
        "error": row.error,
        "status": status,
        "source": row.source,
        "created_at": timestamp(row.created_at),
        "urls": urls,
        "metrics": row.metrics or {},
        "data_removed": row.data_removed,
    }
    if row.started_at is not None:
        body["started_at"] = timestamp(row.started_at)
    if row.completed_at is not None:
        body["completed_at"] = timestamp(row.completed_at)
    if row.deadline is not None:
        body["deadline"] = timestamp(row.deadline)
    if row.deployment:
        body["deployment"] = row.deployment
    if row.webhook:
        body["webhook"] = row.webhook
        body["webhook_events_filter"] = row.webhook_events_filter or ["start", "output", "logs", "completed"]
    return body


def run(row: Prediction, base_url: str, settings: Settings) -> dict[str, Any]:
    """A prediction or training as every view shows it: GET, lists, sync answers, streams and webhooks.

    Output file URLs are on ``base_url`` (the caller's; webhooks use the public base), and a training
    without an object output has none (the spec types a training's output as an object)."""
    body = prediction(row, base_url, aborted_as=settings.aborted_status, stream_path=STREAM_PATH)
    body["output"] = file_urls.rebase_outputs(body["output"], settings, base_url)
    if row.kind == RunKind.TRAINING and not isinstance(body["output"], dict):
        del body["output"]
    return body


def instance(view: InstanceView) -> dict[str, Any]:
    """An instance as ``GET /v1/deployments/{owner}/{name}/instances`` shows it (a cogport extension)."""
    return {
        "id": view.id,
        "state": view.state,
        "hardware": view.hardware,
        "node": view.node,
        "gpus": list(view.gpus),
        "started_at": timestamp(view.started_at),
    }
