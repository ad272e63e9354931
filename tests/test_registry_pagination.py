"""Cursor pagination: absolute next/previous URLs, newest first, stable while rows are inserted."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from cogport.db.engine import Database
from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import add_version, auth, create_model

PAGE = 25


async def _get(client: httpx.AsyncClient, url: str, token: str, spec_path: str = "/models") -> dict[str, Any]:
    response = await client.get(url, headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    validate(spec_path, "get", 200, body)
    return body


def _names(page: dict[str, Any]) -> list[str]:
    return [m["name"] for m in page["results"]]


async def test_models_pages_are_stable_while_models_are_created(client: httpx.AsyncClient, users: Users) -> None:
    for i in range(30):
        await create_model(client, users.alice if i % 2 else users.bob, f"{'alice' if i % 2 else 'bob'}/m{i:02d}")
    newest_first = [f"m{i:02d}" for i in reversed(range(30))]

    first = await _get(client, "/v1/models?sort_by=model_created_at", users.alice)
    assert _names(first) == newest_first[:PAGE]
    assert first["previous"] is None
    assert first["next"].startswith("http://testserver/v1/models?")
    assert "sort_by=model_created_at" in first["next"]

    for i in range(30, 33):  # inserted between the two page reads
        await create_model(client, users.alice, f"alice/m{i:02d}")

    second = await _get(client, first["next"], users.alice)
    assert _names(second) == newest_first[PAGE:]
    assert second["next"] is None
    assert second["previous"].startswith("http://testserver/v1/models?")

    back = await _get(client, second["previous"], users.alice)
    assert _names(back) == newest_first[:PAGE]
    assert back["next"] == first["next"]
    assert back["previous"] is not None  # the three new models are before it now
    newer = await _get(client, back["previous"], users.alice)
    assert _names(newer) == ["m32", "m31", "m30"]
    assert newer["previous"] is None
    assert _names(await _get(client, newer["next"], users.alice)) == newest_first[:PAGE]


async def test_models_pages_in_both_directions_and_by_latest_version(
    client: httpx.AsyncClient, users: Users, database: Database
) -> None:
    for i in range(27):
        await create_model(client, users.bob, f"bob/m{i:02d}")
    await add_version(database, "bob/m00")  # the oldest model has the newest version

    ascending: list[str] = []
    url: str | None = "/v1/models?sort_direction=asc"
    while url:
        page = await _get(client, url, users.bob)
        ascending += _names(page)
        url = page["next"]
    assert ascending == [f"m{i:02d}" for i in range(1, 27)] + ["m00"]

    descending: list[str] = []
    url = "/v1/models"
    while url:
        page = await _get(client, url, users.bob)
        descending += _names(page)
        url = page["next"]
    assert descending == ascending[::-1]


async def test_versions_and_collections_paginate(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    await create_model(client, users.alice, "alice/many")
    ids = [await add_version(database, "alice/many") for _ in range(27)]
    seen: list[str] = []
    url: str | None = "/v1/models/alice/many/versions"
    while url:
        page = await _get(client, url, users.bob, "/models/{model_owner}/{model_name}/versions")
        seen += [v["id"] for v in page["results"]]
        url = page["next"]
    assert seen == ids[::-1]

    for i in range(27):
        response = await client.post("/admin/v1/collections", json={"slug": f"c{i:02d}", "name": f"C {i}"})
        assert response.status_code == 201, response.text
    slugs: list[str] = []
    url = "/v1/collections"
    while url:
        page = await _get(client, url, users.bob, "/collections")
        slugs += [c["slug"] for c in page["results"]]
        url = page["next"]
    assert slugs == [f"c{i:02d}" for i in reversed(range(27))]


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def test_bad_cursors_are_400(client: httpx.AsyncClient, users: Users) -> None:
    for i in range(26):
        await create_model(client, users.alice, f"alice/m{i:02d}")
    good = (await _get(client, "/v1/models", users.alice))["next"]
    assert good is not None
    bad = [
        "not-a-cursor!",
        "%%%",
        _cursor([1, 2]),
        _cursor({"v": "yesterday", "t": 1, "d": "n", "dt": True}),
        _cursor({"v": "2024-01-01T00:00:00", "t": 1, "d": "n", "dt": True}),  # no timezone
        _cursor({"v": "2024-01-01T00:00:00+00:00", "t": [1], "d": "n", "dt": True}),
        _cursor({"v": {"a": 1}, "t": 1, "d": "n", "dt": False}),
        _cursor({"v": "2024-01-01T00:00:00+00:00", "t": 1, "d": "sideways", "dt": True}),
        _cursor({"v": "2024-01-01T00:00:00+00:00", "t": 2**40, "d": "n", "dt": True}),
        _cursor({"v": "2024-01-01T00:00:00+00:00", "t": True, "d": "n", "dt": True}),
    ]
    for cursor in bad:
        for path in ("/v1/models", "/v1/collections", "/v1/models/alice/m00/versions"):
            response = await client.get(path, params={"cursor": cursor}, headers=auth(users.alice))
            assert response.status_code == 400, (path, cursor, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "cursor" in response.json()["detail"]


async def test_public_url_is_used_for_links(client: httpx.AsyncClient, users: Users) -> None:
    client._transport.app.state.settings.public_url = "https://api.example.com/"  # type: ignore[attr-defined]
    for i in range(26):
        await create_model(client, users.alice, f"alice/m{i:02d}")
    page = await _get(client, "/v1/models", users.alice)
    assert page["next"].startswith("https://api.example.com/v1/models?cursor=")
    assert page["results"][0]["url"].startswith("https://api.example.com/")
