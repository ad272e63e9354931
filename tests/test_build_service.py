"""The builder service: what a build records on the version, durability across restarts, example models."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from cogport.app import create_app
from cogport.build import packing
from cogport.build.builder import stage
from cogport.db.engine import Database
from cogport.db.tables import Build, Model, Version, utcnow
from cogport.ops import builds
from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.pushing import (  # noqa: F401 - fixtures
    push_dir,
    shared_build_dirs,
    shared_venvs,
    wait_build,
    write_model,
)

pytestmark = pytest.mark.usefixtures("shared_build_dirs")

CONCURRENT = """\
import os

from cog import BaseRunner, Input, concurrent

assert os.environ["GREETING"] == "hi", "the build environment is applied while inspecting"


class Runner(BaseRunner):
    @concurrent(max=3)
    async def run(self, name: str = Input(default="you")) -> str:
        return os.environ["FULL"] + " " + name
"""


async def _create_model(client: httpx.AsyncClient, name: str = "m") -> None:
    response = await client.post(
        "/v1/models", json={"owner": "admin", "name": name, "visibility": "private", "hardware": "cpu"}
    )
    assert response.status_code == 201, response.text


async def _version(database: Database, version_id: str) -> Version:
    async with database.session() as session:
        return (await session.execute(select(Version).where(Version.id == version_id))).scalar_one()


async def test_concurrency_gpu_and_environment_are_recorded(
    client: httpx.AsyncClient, database: Database, tmp_path: Path
) -> None:
    await _create_model(client)
    cog_yaml = (
        'build:\n  python_version: "3.11"\n  gpu: true\n  environment:\n    - GREETING=hi\n'
        '    - FULL=$GREETING there\npredict: "predict.py:Runner"\n'
    )
    directory = write_model(tmp_path / "m", {"cog.yaml": cog_yaml, "predict.py": CONCURRENT})
    build = await push_dir(client, directory, "admin/m")
    assert build["status"] == "succeeded", build["logs"]
    version = await _version(database, build["version"])
    assert version.concurrency == 3  # from @concurrent(max=3)
    assert version.gpu is True
    assert version.environment == {"GREETING": "hi", "FULL": "hi there"}
    assert version.predict_ref == "predict.py:Runner"

    (directory / "cog.yaml").write_text(cog_yaml + "concurrency:\n  max: 5\n")
    build = await push_dir(client, directory, "admin/m")
    assert build["status"] == "succeeded", build["logs"]
    assert (await _version(database, build["version"])).concurrency == 5  # cog.yaml wins


async def test_sdk_version_is_installed(client: httpx.AsyncClient, database: Database, tmp_path: Path) -> None:
    await _create_model(client)
    hello = (Path(__file__).parents[1] / "examples" / "hello-world" / "predict.py").read_text()
    cog_yaml = 'build:\n  python_version: "3.11"\n  sdk_version: "0.22.0"\npredict: "predict.py:Predictor"\n'
    build = await push_dir(client, write_model(tmp_path / "m", {"cog.yaml": cog_yaml, "predict.py": hello}), "admin/m")
    assert build["status"] == "succeeded", build["logs"]
    assert (await _version(database, build["version"])).cog_version == "0.22.0"
    response = await client.get(f"/v1/models/admin/m/versions/{build['version']}")
    assert response.json()["cog_version"] == "0.22.0"


async def _queue_build(app: FastAPI, settings: Settings, source: Path, *, status: str, logs: str = "") -> str:
    """A build row as a crashed process would leave it: claimed, with a lease that has run out."""
    archive = packing.pack_bytes(source, packing.model_files(source))
    staged = await asyncio.to_thread(stage, io.BytesIO(archive), settings.data_dir / "builds" / "s1" / "src", settings)
    database: Database = app.state.database
    async with database.session() as session:
        model = (await session.execute(select(Model).where(Model.name == "m"))).scalar_one()
        build = await builds.create(
            session,
            model,
            model.owner_id,
            version_id=staged.version_id(model.id, "admin/m"),
            content_id=staged.content_id,
            source_path=str(staged.source),
            logs=logs,
        )
        await session.execute(
            update(Build)
            .where(Build.id == build.id)
            .values(status=status, lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        return build.id


HELLO_DIR = Path(__file__).parents[1] / "examples" / "hello-world"


async def test_a_build_whose_process_died_is_run_again(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    await _create_model(client)
    build_id = await _queue_build(app, settings, HELLO_DIR, status=builds.PROCESSING)
    app.state.services.wake("builder")
    build = await wait_build(client, build_id)
    assert build["status"] == "succeeded", build["logs"]
    assert builds.INTERRUPTED in build["logs"]


async def test_a_build_interrupted_too_often_fails(app: FastAPI, client: httpx.AsyncClient, settings: Settings) -> None:
    await _create_model(client)
    logs = (builds.INTERRUPTED + "\n") * builds.MAX_INTERRUPTIONS
    build_id = await _queue_build(app, settings, HELLO_DIR, status=builds.PROCESSING, logs=logs)
    app.state.services.wake("builder")
    build = await wait_build(client, build_id)
    assert build["status"] == "failed"
    assert "interrupted too many times" in build["error"]


SLOW = """\
import time

time.sleep(float(open("delay.txt").read()))

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self) -> str:
        return "ok"
"""


async def test_a_build_running_at_shutdown_is_built_after_the_restart(settings: Settings, tmp_path: Path) -> None:
    directory = write_model(
        tmp_path / "slow",
        {
            "cog.yaml": 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n',
            "predict.py": SLOW,
            "delay.txt": "30",
        },
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    first = create_app(settings)
    async with first.router.lifespan_context(first):
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
            await _create_model(client)
            archive = packing.pack_bytes(directory, packing.model_files(directory))
            response = await client.post("/v1/models/admin/m/versions", files={"source": ("m.tar.gz", archive)})
            build_id = response.json()["id"]
            for _ in range(600):
                build = (await client.get(f"/v1/builds/{build_id}")).json()
                if "Inspecting" in build["logs"]:
                    break
                await asyncio.sleep(0.05)
            assert build["status"] == "processing"
    # Stopped mid-build: the build went back to the queue at once. Make it quick, and start again.
    database = Database(settings)
    async with database.session() as session:
        row = await session.get(Build, build_id)
        assert row is not None and row.status == builds.STARTING and builds.RELEASED in row.logs
        staged = Path(row.source_path or "")
    await database.dispose()
    (staged / "delay.txt").write_text("0")
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
            build = await wait_build(client, build_id)
    assert build["status"] == "succeeded", build["logs"]


async def test_examples_are_registered_on_start_once(settings: Settings) -> None:
    settings.register_examples = True
    for _ in range(2):  # the second start finds everything in place
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
                for _ in range(1200):
                    response = await client.get("/v1/models/examples/hello-world")
                    if response.status_code == 200 and response.json()["latest_version"]:
                        break
                    await asyncio.sleep(0.05)
                model = response.json()
                assert model["visibility"] == "public"
                assert model["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"]["required"] == [
                    "text"
                ]
    database = Database(settings)
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(Build)) == 1
        assert await session.scalar(select(func.count()).select_from(Version)) == 1
    await database.dispose()


STREAMING_DECORATOR = """\
from cog import BaseRunner, streaming


class Runner(BaseRunner):
    @streaming
    def run(self, text: str) -> str:
        return text
"""


async def test_the_streaming_decorator_marks_the_stored_schema(client: httpx.AsyncClient, tmp_path: Path) -> None:
    await _create_model(client)
    cog_yaml = 'build:\n  python_version: "3.11"\npredict: "predict.py:Runner"\n'
    directory = write_model(tmp_path / "m", {"cog.yaml": cog_yaml, "predict.py": STREAMING_DECORATOR})
    build = await push_dir(client, directory, "admin/m")
    assert build["status"] == "succeeded", build["logs"]
    version = (await client.get(f"/v1/models/admin/m/versions/{build['version']}")).json()
    assert version["openapi_schema"]["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert version["openapi_schema"]["components"]["schemas"]["Output"] == {"title": "Output", "type": "string"}


async def test_a_new_venv_installs_offline_from_a_warm_cache(client: httpx.AsyncClient, tmp_path: Path) -> None:
    await _create_model(client)
    hello = (HELLO_DIR / "predict.py").read_text()
    cog_yaml = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
    first = await push_dir(client, write_model(tmp_path / "a", {"cog.yaml": cog_yaml, "predict.py": hello}), "admin/m")
    assert first["status"] == "succeeded", first["logs"]
    # A PIP_* variable is part of the venv key: same packages, new venv, and the cache now holds them all.
    other = cog_yaml.replace("build:\n", "build:\n  environment:\n    - PIP_NOTE=1\n")
    second = await push_dir(client, write_model(tmp_path / "b", {"cog.yaml": other, "predict.py": hello}), "admin/m")
    assert second["status"] == "succeeded", second["logs"]
    assert "Creating environment" in second["logs"]
    assert "(installed from the uv cache, offline)" in second["logs"]
