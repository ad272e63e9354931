"""Finding 6 (push time): ``predict.py`` runs at import in the schema step of a push; from there it is no
more root, and reaches no more of the host, than at run time (it has no network at all).

The ``pushtime`` model does the attacks of findings 1, 3 and 5 at its module's top level and writes what it
found into the test's directory (bound into sandboxes), and into its input's description.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cogport.db.engine import Database
from cogport.db.tables import Model
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.hostile.conftest import MODELS, ROOT, UID_BASE
from tests.support.pushing import (  # noqa: F401 - fixtures
    create_model,
    push_dir,
    shared_build_dirs,
    shared_venvs,
)

pytestmark = pytest.mark.usefixtures("shared_build_dirs")

HOST_SERVICES = [5432, 6379, 3306, 5672]


def _push(server: LiveServer, directory: Path, name: str) -> dict[str, Any]:
    create_model(server.url, ADMIN_TOKEN, "admin", name)

    async def go() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            build = await push_dir(client, directory, f"admin/{name}", wait_s=600)
            model = (await client.get(f"/v1/models/admin/{name}")).json()
        return {**build, "model": model}

    return asyncio.run(go())


def _model_id(server: LiveServer, name: str) -> int:
    """The model's row id (its tenant), read through an engine of this thread's own."""

    async def read() -> int:
        database = Database(server.settings)
        try:
            async with database.session() as session:
                return (await session.execute(select(Model.id).where(Model.name == name))).scalar_one()
        finally:
            await database.dispose()

    return asyncio.run(read())


def test_the_schema_step_reaches_nothing(live_server: LiveServer, tmp_path: Path) -> None:
    directory = tmp_path / "pushtime"
    shutil.copytree(MODELS / "pushtime", directory)
    out = tmp_path / "found-at-push.json"  # tmp_path: bound into every sandbox, writable by the model's uid
    api_port = live_server.settings.port
    (directory / "targets.json").write_text(json.dumps({"out": str(out), "ports": [*HOST_SERVICES, api_port]}))

    build = _push(live_server, directory, "pushtime")

    assert build["status"] == "succeeded", build.get("logs")
    found = json.loads(out.read_text())  # the code ran, at push time, and could write where it was let
    schema = build["model"]["latest_version"]["openapi_schema"]
    assert json.loads(schema["components"]["schemas"]["Input"]["properties"]["arg"]["description"]) == found
    # Finding 1: not root, no capabilities, no way back.
    assert 0 not in found["resuid"], found
    assert found["resuid"] == [UID_BASE + _model_id(live_server, "pushtime") if ROOT else os.geteuid()] * 3, found
    assert int(found["status"]["CapEff"], 16) == 0 and int(found["status"]["CapBnd"], 16) == 0, found
    assert found["status"]["NoNewPrivs"] == "1", found
    assert found["core_pattern"] in ("EROFS", "EACCES", "EPERM"), found
    assert found["unshare"] == "EPERM", found
    assert 0 not in found["su_euids"], found
    # Findings 3 and 5: no network at all: nothing listens on its loopback, nothing else is routed.
    assert found["listening"] == [], found
    assert set(found["connect"].values()) == {"ECONNREFUSED"}, found["connect"]
    assert found["metadata"] == found["private"] == "ENETUNREACH", found
    assert found["proxy_env"] == {}, found
