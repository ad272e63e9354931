"""Every example model, pushed with the real ``cogport push`` against a live server, builds into a version
whose schema matches a hand-checked copy in ``tests/data/schemas``.

(``examples/embeddings`` needs a CPU torch wheel; it is pushed by ``test_build_embeddings.py`` when enabled.)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cogport.db.engine import Database
from cogport.db.tables import Version
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.pushing import (  # noqa: F401 - fixtures
    EXAMPLES,
    SCHEMAS,
    cli_push,
    create_model,
    shared_build_dirs,
    shared_venvs,
)

pytestmark = pytest.mark.usefixtures("shared_build_dirs")

EXAMPLE_FACTS = {
    "hello-world": {"predict_ref": "predict.py:Predictor", "train_ref": None, "python": "3.11"},
    "image": {"predict_ref": "predict.py:Predictor", "train_ref": None, "python": "3.12"},
    "streaming": {"predict_ref": "predict.py:Runner", "train_ref": None, "python": "3.11"},
    "all-inputs": {"predict_ref": "predict.py:Predictor", "train_ref": None, "python": "3.11"},
    "trainable": {"predict_ref": "predict.py:Predictor", "train_ref": "train.py:train", "python": "3.11"},
}


def _version(server: LiveServer, model: str, version_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/v1/models/{model}/versions/{version_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _row(server: LiveServer, version_id: str) -> Any:
    """The version row, read through an engine of this thread's own (the server's is bound to its loop)."""

    async def read() -> Any:
        database = Database(server.settings)
        try:
            async with database.session() as session:
                return (await session.execute(select(Version).where(Version.id == version_id))).scalar_one()
        finally:
            await database.dispose()

    return asyncio.run(read())


@pytest.mark.parametrize("example", sorted(EXAMPLE_FACTS))
def test_push_example(live_server: LiveServer, example: str) -> None:
    create_model(live_server.url, ADMIN_TOKEN, "admin", example)
    result = cli_push(live_server.url, ADMIN_TOKEN, EXAMPLES / example, f"admin/{example}")
    assert result.returncode == 0, result.stderr
    version_id = result.version
    assert len(version_id) == 64 and all(c in "0123456789abcdef" for c in version_id), result.stdout
    assert "Schema written" in result.stderr  # the build log is shown as it happens

    version = _version(live_server, f"admin/{example}", version_id)
    expected = json.loads((SCHEMAS / f"{example}.json").read_text())
    assert version["openapi_schema"] == expected
    assert version["cog_version"] == live_server.settings.build.cog_version

    facts = EXAMPLE_FACTS[example]
    row = _row(live_server, version_id)
    assert row.predict_ref == facts["predict_ref"]
    assert row.train_ref == facts["train_ref"]
    assert row.python_version.startswith(facts["python"] + ".")
    assert row.concurrency == 1
    assert row.gpu is False
    source = Path(row.source_path)
    # the source is keyed by the files' content id (shared by models pushed the same files), not the version id
    assert source.parent.parent == live_server.settings.data_dir / "versions" and source.name == "src"
    assert source.parent.name != version_id
    assert (source / "cog.yaml").is_file()
    assert Path(row.venv_path, "bin", "python").exists()

    # coglet's copy always allows SSE, whatever the model streams.
    runtime = json.loads((source / ".cog" / "openapi_schema.json").read_text())
    for path in ("/predictions", "/trainings"):
        if path in runtime["paths"]:
            assert runtime["paths"][path]["post"]["x-cog-streaming"] is True
    assert runtime["components"] == expected["components"]


def test_push_twice_is_idempotent(live_server: LiveServer) -> None:
    create_model(live_server.url, ADMIN_TOKEN, "admin", "hello")
    first = cli_push(live_server.url, ADMIN_TOKEN, EXAMPLES / "hello-world", "admin/hello")
    second = cli_push(live_server.url, ADMIN_TOKEN, EXAMPLES / "hello-world", "admin/hello")
    assert first.returncode == second.returncode == 0, second.stderr
    assert first.version == second.version
    assert "already exists" in second.stderr
    response = httpx.get(
        f"{live_server.url}/v1/models/admin/hello/versions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert [v["id"] for v in response.json()["results"]] == [first.version]


def test_same_content_on_another_model_reuses_the_build(live_server: LiveServer) -> None:
    create_model(live_server.url, ADMIN_TOKEN, "admin", "one")
    create_model(live_server.url, ADMIN_TOKEN, "admin", "two")
    one = cli_push(live_server.url, ADMIN_TOKEN, EXAMPLES / "hello-world", "admin/one")
    two = cli_push(live_server.url, ADMIN_TOKEN, EXAMPLES / "hello-world", "admin/two")
    assert one.returncode == two.returncode == 0, two.stderr
    assert one.version != two.version  # version ids include the model
    assert "reusing that build" in two.stderr
    first = _version(live_server, "admin/one", one.version)
    second = _version(live_server, "admin/two", two.version)
    assert first["openapi_schema"] == second["openapi_schema"]


def test_changed_file_gives_a_new_version_and_ignored_files_do_not(live_server: LiveServer, tmp_path: Path) -> None:
    import shutil

    create_model(live_server.url, ADMIN_TOKEN, "admin", "hello")
    model_dir = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello-world", model_dir)
    first = cli_push(live_server.url, ADMIN_TOKEN, model_dir, "admin/hello")
    (model_dir / ".cogignore").write_text("notes/\n*.log\n")
    (model_dir / "notes").mkdir()
    (model_dir / "notes" / "todo.txt").write_text("ignored\n")
    (model_dir / "debug.log").write_text("ignored\n")
    with_ignored = cli_push(live_server.url, ADMIN_TOKEN, model_dir, "admin/hello")
    (model_dir / "predict.py").write_text((model_dir / "predict.py").read_text() + "\n# changed\n")
    changed = cli_push(live_server.url, ADMIN_TOKEN, model_dir, "admin/hello")
    assert first.returncode == with_ignored.returncode == changed.returncode == 0, changed.stderr
    # .cogignore itself is part of the content, so the id changes; the ignored files are not uploaded.
    assert with_ignored.version != first.version
    assert "(4 files" in with_ignored.stderr
    assert changed.version not in (first.version, with_ignored.version)
