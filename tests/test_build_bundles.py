"""Bundles (issue 12): a push stores the version's files and environment facts; a node prepares and runs it.

Real pushes through the app, real uv, a real coglet instance on the prepared paths; the node's cache is a
directory of its own, apart from the server's data dir.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cogport.build import bundles
from cogport.build.errors import BundleMissing
from cogport.build.log import BuildLog
from cogport.build.prepare import Prepared, node_environments, prepare
from cogport.core.jobs import VersionSpec
from cogport.db.engine import Database
from cogport.db.tables import Version
from cogport.runtime.instance import Instance, InstanceOptions
from cogport.runtime.sandbox import Sandbox
from cogport.settings import Settings
from cogport.storage.local import LocalStorage
from tests.support.models import fixture_dir
from tests.support.pushing import push_dir, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.runtime import Events, job

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


class CountingStorage(LocalStorage):
    """The real local storage, counting archive downloads."""

    downloads = 0

    async def open_chunks(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        self.downloads += 1
        async for chunk in super().open_chunks(key, chunk_size):
            yield chunk


async def _push(client: httpx.AsyncClient, directory: Path, name: str) -> str:
    response = await client.post(
        "/v1/models", json={"owner": "admin", "name": name, "visibility": "private", "hardware": "cpu"}
    )
    assert response.status_code == 201, response.text
    build = await push_dir(client, directory, f"admin/{name}")
    assert build["status"] == "succeeded", build["logs"]
    assert "Storing the version's bundle" in build["logs"]
    version: str = build["version"]
    return version


async def _spec(database: Database, version_id: str) -> VersionSpec:
    """The spec the dispatcher makes for the version (paths on the API host, the bundle key)."""
    async with database.session() as session:
        version = (await session.execute(select(Version).where(Version.id == version_id))).scalar_one()
    return VersionSpec(
        version_pk=version.pk,
        version_id=version.id,
        mode="predict",
        source_path=version.source_path or "",
        venv_path=version.venv_path or "",
        ref=version.predict_ref or "",
        bundle_key=bundles.bundle_key(version.id),
    )


async def _predict(spec: VersionSpec, sandbox_dir: Path, text: str) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=120.0), trust_env=False) as client:
        instance = Instance(spec, InstanceOptions(sandbox=Sandbox(binds=(sandbox_dir,))), client=client, name="node")
        try:
            await instance.start()
            events = Events()
            instance.reserve()
            await instance.predict(job(spec, text=text), events)
            return await events.finish()
        finally:
            await instance.stop()


async def test_push_stores_a_bundle_that_a_node_prepares_and_runs(
    app: FastAPI, client: httpx.AsyncClient, database: Database, settings: Settings, tmp_path: Path
) -> None:
    version_id = await _push(client, fixture_dir(tmp_path, "hello", ref="predict.py:Predictor"), "hello")
    storage: LocalStorage = app.state.storage
    key = bundles.bundle_key(version_id)
    assert await storage.exists(key)

    manifest = json.loads(await storage.get(bundles.manifest_key(key)))
    assert manifest["version_id"] == version_id
    assert manifest["python_wanted"] == "3.11"
    assert manifest["python_version"].startswith("3.11.")
    assert manifest["sdk_version"] == settings.build.cog_version
    lock = manifest["lock"].splitlines()
    assert f"cog=={settings.build.cog_version}" in lock
    assert f"coglet=={settings.build.cog_version}" in lock
    with tarfile.open(fileobj=io.BytesIO(await storage.get(key))) as tar:
        names = set(tar.getnames())
    assert {"cog.yaml", "predict.py", ".cog/openapi_schema.json"} <= names
    assert not any("__pycache__" in name for name in names)

    # A node: its own cache dir and storage client, two preparations at once.
    node = tmp_path / "node"
    node_storage = CountingStorage(settings.data_dir / "files")
    spec = await _spec(database, version_id)
    logs = (BuildLog(), BuildLog())
    first, second = await asyncio.gather(*(prepare(node_storage, spec, node, settings, log=log) for log in logs))
    assert first == second
    assert node_storage.downloads == 1
    assert sum("Creating environment" in log.text for log in logs) == 1
    assert first.source_path == node / "versions" / version_id / "src"
    assert first.venv_path.parent == node / "venvs"
    assert not first.venv_path.is_relative_to(settings.data_dir)
    assert (first.source_path / ".cog" / "openapi_schema.json").is_file()
    assert (first.venv_path / "bin" / "python").exists()

    final = await _predict(first.spec(spec), tmp_path, "node")
    assert final["status"] == "succeeded", final
    assert final["output"] == "hello node"

    # Prepared already: nothing downloaded again, the same paths.
    assert await prepare(node_storage, key, node, settings) == first
    assert node_storage.downloads == 1


async def test_versions_with_one_environment_share_the_node_venv(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    directory = fixture_dir(tmp_path, "hello", ref="predict.py:Predictor")
    one = await _push(client, directory, "hello-one")
    two = await _push(client, directory, "hello-two")  # the same files: one build, two versions, two bundles
    assert one != two
    node = tmp_path / "node"
    storage = app.state.storage
    a: Prepared = await prepare(storage, bundles.bundle_key(one), node, settings)
    b: Prepared = await prepare(storage, bundles.bundle_key(two), node, settings)
    assert a.source_path != b.source_path
    assert a.venv_path == b.venv_path


async def test_a_missing_bundle_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "empty-storage")
    with pytest.raises(BundleMissing, match=r"storage holds no bundle bundles/abc123/source\.tar\.gz"):
        await prepare(storage, bundles.bundle_key("abc123"), tmp_path / "node", settings)
    assert not list((tmp_path / "node" / "versions").glob(".partial-*"))

    # An old version (no bundle) gets one from the host holding its files, and only there.
    gone = VersionSpec(1, "abc123", "predict", str(tmp_path / "nowhere"), str(tmp_path / "novenv"), "predict.py:P")
    with pytest.raises(BundleMissing, match="Push the model again"):
        await bundles.ensure(storage, gone, node_environments(tmp_path / "node", settings), settings)


async def test_a_version_without_a_bundle_gets_one_lazily(
    app: FastAPI, client: httpx.AsyncClient, database: Database, settings: Settings, tmp_path: Path
) -> None:
    version_id = await _push(client, fixture_dir(tmp_path, "hello", ref="predict.py:Predictor"), "hello")
    storage: LocalStorage = app.state.storage
    await storage.delete_prefix(bundles.prefix(version_id))  # as for a version pushed before bundles
    spec = replace(await _spec(database, version_id), bundle_key="")
    with pytest.raises(BundleMissing):
        await prepare(storage, spec, tmp_path / "node", settings)
    environments = node_environments(tmp_path / "host", settings)
    assert await bundles.ensure(storage, spec, environments, settings) == bundles.bundle_key(version_id)
    prepared = await prepare(storage, spec, tmp_path / "node", settings)
    assert (prepared.source_path / "predict.py").is_file()
