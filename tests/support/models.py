"""Push example or fixture models into a live server for prediction tests."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.pushing import create_model, push_dir


def push(
    server: LiveServer | str,
    directory: Path,
    name: str,
    *,
    owner: str = "admin",
    token: str = ADMIN_TOKEN,
    visibility: str = "private",
) -> str:
    """Create ``owner/name`` and push ``directory`` into it; returns the version id."""
    url = server if isinstance(server, str) else server.url
    create_model(url, token, owner, name, visibility)

    async def go() -> str:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            build = await push_dir(client, directory, f"{owner}/{name}")
        assert build["status"] == "succeeded", build.get("logs")
        version: str = build["version"]
        return version

    return asyncio.run(go())


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def fixture_dir(tmp: Path, name: str, ref: str = "predict.py:Runner", extra_yaml: str = "") -> Path:
    """A pushable copy of ``tests/fixtures/models/<name>`` (they carry no cog.yaml of their own)."""
    target = tmp / f"push-{name}"
    shutil.copytree(FIXTURES / name, target, ignore=shutil.ignore_patterns(".cog", "__pycache__"))
    (target / "cog.yaml").write_text(f'build:\n  python_version: "3.11"\npredict: "{ref}"\n{extra_yaml}')
    return target


def push_fixture(
    server: LiveServer | str, tmp: Path, name: str, *, ref: str = "predict.py:Runner", extra_yaml: str = ""
) -> str:
    return push(server, fixture_dir(tmp, name, ref, extra_yaml), name.replace("_", "-"))
