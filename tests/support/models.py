"""Push example or fixture models into a live server for prediction tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.pushing import create_model, push_dir


def push(
    server: LiveServer,
    directory: Path,
    name: str,
    *,
    owner: str = "admin",
    token: str = ADMIN_TOKEN,
    visibility: str = "private",
) -> str:
    """Create ``owner/name`` and push ``directory`` into it; returns the version id."""
    create_model(server.url, token, owner, name, visibility)

    async def go() -> str:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            build = await push_dir(client, directory, f"{owner}/{name}")
        assert build["status"] == "succeeded", build.get("logs")
        version: str = build["version"]
        return version

    return asyncio.run(go())
