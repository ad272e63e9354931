"""cogport with S3 storage (a real SeaweedFS): uploads, downloads, file inputs and outputs, weights.

Every byte lands in the bucket (listed with aiobotocore) and nothing in the local files directory.
Downloads through the API stream from the bucket through cogport (same headers as local files); a file
input larger than the inline limit reaches the model as a presigned URL of the bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from cogport.db.engine import Database
from cogport.files.signing import download_query, signing_key
from cogport.files.urls import download_url
from cogport.runtime.weights import WeightsCache
from cogport.settings import Settings
from cogport.storage.s3 import S3Storage
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.accounts import Users
from tests.support.models import push
from tests.support.predictions import wait_for
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.registry import auth
from tests.support.seaweed import Seaweed, seaweed  # noqa: F401 - the fixture
from tests.support.servers import running
from tests.test_files_e2e import png, png_size
from tests.test_files_inputs import Resolve

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def settings(settings: Settings, seaweed: Seaweed) -> Settings:  # noqa: F811 - the fixture
    settings.storage = seaweed.storage_settings()
    settings.files_inline_max_bytes = 16  # every test file goes by URL
    return settings


async def bucket_keys(seaweed: Seaweed, settings: Settings) -> list[str]:  # noqa: F811 - the fixture
    """The keys under this test's prefix, without it."""
    prefix = settings.storage.prefix + "/"
    async with seaweed.client() as client:
        listed: Any = await client.list_objects_v2(Bucket=seaweed.bucket, Prefix=prefix)
    return sorted(item["Key"][len(prefix) :] for item in listed.get("Contents", []))


def local_files(settings: Settings) -> list[Path]:
    root = settings.data_dir / "files"
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def test_upload_download_and_presigned_input(
    app: FastAPI,
    client: httpx.AsyncClient,
    database: Database,
    users: Users,
    settings: Settings,
    seaweed: Seaweed,  # noqa: F811 - the fixture
) -> None:
    assert isinstance(app.state.storage, S3Storage)
    body = b"\xff\xd8 not really a jpeg, but large enough"
    created = await client.post(
        "/v1/files", files={"content": ("large photo.jpg", body, "image/jpeg")}, headers=auth(users.alice)
    )
    assert created.status_code == 201, created.text
    file_id = created.json()["id"]
    assert await bucket_keys(seaweed, settings) == [f"uploads/{file_id}/large photo.jpg"]
    assert local_files(settings) == []

    # Downloads stream through cogport, with its headers (not a redirect to the bucket).
    query = download_query(signing_key(settings), "alice", file_id, 60)
    response = await client.get(download_url("", file_id, query, name="large photo.jpg"), headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    assert response.content == body
    assert response.headers["content-security-policy"].startswith("sandbox")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-length"] == str(len(body))

    # A file input reaches the model as a presigned URL of the bucket, ending in the file's name.
    resolved = await Resolve(app, database, settings, users)({"image": f"http://testserver/v1/files/{file_id}"})
    url = resolved["image"]
    assert url.startswith(f"{seaweed.endpoint}/{seaweed.bucket}/{settings.storage.prefix}/uploads/{file_id}/")
    assert unquote(urlsplit(url).path).endswith("/large photo.jpg")
    async with httpx.AsyncClient() as plain:
        fetched = await plain.get(url)
    assert fetched.status_code == 200
    assert fetched.content == body
    assert fetched.headers["content-type"] == "image/jpeg"

    # Deleting the file removes its object.
    assert (await client.delete(f"/v1/files/{file_id}", headers=auth(users.alice))).status_code == 204
    assert await bucket_keys(seaweed, settings) == []


async def test_weights_are_copied_out_of_the_bucket_once(
    app: FastAPI,
    settings: Settings,
    seaweed: Seaweed,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    storage = app.state.storage
    await storage.put("weights/v1/model.tar", b"trained")
    cache = WeightsCache(storage, tmp_path / "cache" / "weights")
    path = cache.path_for("weights/v1/model.tar")
    assert path.name == "model.tar"
    await cache.ensure("weights/v1/model.tar")
    assert path.read_bytes() == b"trained"
    await storage.delete("weights/v1/model.tar")
    await cache.ensure("weights/v1/model.tar")  # cached: storage is not asked again
    assert path.read_bytes() == b"trained"
    await cache.forget("weights/v1/model.tar")
    assert not path.parent.exists()


@pytest.fixture
def server(shared_build_dirs: Settings) -> Iterator[LiveServer]:  # noqa: F811 - the fixture
    with running(shared_build_dirs) as live:
        yield live


def test_prediction_with_file_input_and_output(
    server: LiveServer,
    seaweed: Seaweed,  # noqa: F811 - the fixture
) -> None:
    version = push(server, EXAMPLES / "image", "image")
    uploaded = httpx.post(f"{server.url}/v1/files", files={"content": ("in.png", png(8, 6), "image/png")}, headers=AUTH)
    assert uploaded.status_code == 201, uploaded.text
    file = uploaded.json()
    response = httpx.post(
        f"{server.url}/v1/predictions",
        json={"version": version, "input": {"image": file["urls"]["get"], "width": 4}},
        headers={**AUTH, "Prefer": "wait=60"},
        timeout=90,
    )
    assert response.status_code in (200, 201), response.text
    prediction = wait_for(server, response.json()["id"], {"succeeded", "failed", "canceled"})
    assert prediction["status"] == "succeeded", (prediction["error"], prediction["logs"])
    output = httpx.get(prediction["output"])
    assert output.status_code == 200
    assert png_size(output.content) == (4, 3)
    assert output.headers["content-security-policy"].startswith("sandbox")

    keys = asyncio.run(bucket_keys(seaweed, server.settings))
    assert f"uploads/{file['id']}/in.png" in keys
    assert any(key.startswith("outputs/") and key.endswith(".png") for key in keys), keys
    assert local_files(server.settings) == []
