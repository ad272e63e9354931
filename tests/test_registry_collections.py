"""Collections (read by everyone, edited by admins under /admin/v1) and GET /v1/search."""

from __future__ import annotations

import httpx

from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import auth, create_model

COLLECTION = "/collections/{collection_slug}"


async def _models(client: httpx.AsyncClient, users: Users) -> None:
    await create_model(client, users.alice, "alice/llama", description="A llama that chats")
    await create_model(client, users.bob, "bob/diffusion", description="Pictures")
    await create_model(client, users.alice, "alice/secret-llama", visibility="private")


async def test_collection_lifecycle(client: httpx.AsyncClient, users: Users) -> None:
    await _models(client, users)
    body = {
        "slug": "text-generation",
        "name": "Text generation",
        "description": "Models that write",
        "full_description": "# Text\n\nModels that write.",
        "models": ["bob/diffusion", "alice/llama"],
    }
    created = await client.post("/admin/v1/collections", json=body)
    assert created.status_code == 201, created.text
    validate(COLLECTION, "get", 200, created.json())
    assert [m["name"] for m in created.json()["models"]] == ["diffusion", "llama"]

    listed = await client.get("/v1/collections", headers=auth(users.bob))
    assert listed.status_code == 200
    validate("/collections", "get", 200, listed.json())
    assert listed.json()["results"] == [
        {"name": "Text generation", "slug": "text-generation", "description": "Models that write"}
    ]

    got = await client.get("/v1/collections/text-generation", headers=auth(users.bob))
    assert got.status_code == 200
    validate(COLLECTION, "get", 200, got.json())
    assert got.json()["full_description"] == "# Text\n\nModels that write."
    assert [f"{m['owner']}/{m['name']}" for m in got.json()["models"]] == ["bob/diffusion", "alice/llama"]

    edited = await client.patch(
        "/admin/v1/collections/text-generation", json={"name": "Writing", "models": ["alice/llama"]}
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["name"] == "Writing"
    assert edited.json()["description"] == "Models that write"
    assert [m["name"] for m in edited.json()["models"]] == ["llama"]

    deleted = await client.delete("/admin/v1/collections/text-generation")
    assert deleted.status_code == 204
    missing = await client.get("/v1/collections/text-generation", headers=auth(users.bob))
    assert missing.status_code == 404
    assert missing.json()["status"] == 404


async def test_collection_edits_are_validated(client: httpx.AsyncClient, users: Users) -> None:
    await _models(client, users)
    assert (await client.post("/admin/v1/collections", json={"slug": "c", "name": "C"})).status_code == 201
    cases: list[tuple[str, str, dict[str, object], int, str]] = [
        ("POST", "/admin/v1/collections", {"slug": "c", "name": "Again"}, 409, "already exists"),
        ("POST", "/admin/v1/collections", {"slug": "Bad Slug", "name": "x"}, 422, "slug"),
        ("POST", "/admin/v1/collections", {"slug": "d", "name": "D", "models": ["llama"]}, 422, "owner/name"),
        ("POST", "/admin/v1/collections", {"slug": "d", "name": "D", "models": ["alice/nope"]}, 422, "alice/nope"),
        ("POST", "/admin/v1/collections", {"slug": "d", "name": "D", "models": ["alice/secret-llama"]}, 422, "public"),
        ("POST", "/admin/v1/collections", {"slug": "d", "name": "D", "tags": []}, 422, "tags"),
        ("PATCH", "/admin/v1/collections/c", {"name": None}, 422, "name"),
        ("PATCH", "/admin/v1/collections/c", {"description": None}, 422, "description"),
        ("PATCH", "/admin/v1/collections/c", {"name": ""}, 422, "name"),
        ("PATCH", "/admin/v1/collections/c", {"models": "alice/llama"}, 422, "models"),
        ("PATCH", "/admin/v1/collections/nope", {"name": "x"}, 404, "could not be found"),
    ]
    for method, path, body, status, needle in cases:
        response = await client.request(method, path, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["status"] == status
        assert needle in response.json()["detail"], (body, response.json())
    assert (await client.get("/v1/collections/d", headers=auth(users.bob))).status_code == 404
    unchanged = await client.get("/v1/collections/c", headers=auth(users.bob))
    assert unchanged.json() == {"name": "C", "slug": "c", "description": "", "full_description": None, "models": []}


async def test_search(client: httpx.AsyncClient, users: Users) -> None:
    await _models(client, users)
    collection = {"slug": "llamas", "name": "Llamas", "description": "All the llamas", "models": ["alice/llama"]}
    assert (await client.post("/admin/v1/collections", json=collection)).status_code == 201

    anonymous = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with anonymous:
        response = await anonymous.get("/v1/search", params={"query": "llama"})
        assert response.status_code == 200, response.text
        body = response.json()
        validate("/search", "get", 200, body)
        assert body["query"] == "llama"
        assert [f"{m['model']['owner']}/{m['model']['name']}" for m in body["models"]] == ["alice/llama"]
        assert body["models"][0]["metadata"]["generated_description"] == "A llama that chats"
        assert body["collections"] == [
            {"name": "Llamas", "slug": "llamas", "description": "All the llamas", "models": ["alice/llama"]}
        ]

        for params in ({}, {"query": ""}, {"query": "   "}):
            missing = await anonymous.get("/v1/search", params=params)
            assert missing.status_code == 400
            validate("/search", "get", 400, missing.json())
            assert missing.json()["detail"] == 'Query parameter "query" is required'
        for limit in ("0", "51", "many"):
            bad = await anonymous.get("/v1/search", params={"query": "llama", "limit": limit})
            assert bad.status_code == 422
            assert "limit" in bad.json()["detail"]

    # the owner also finds their private model; limit caps the models
    mine = await client.get("/v1/search", params={"query": "llama"}, headers=auth(users.alice))
    assert sorted(m["model"]["name"] for m in mine.json()["models"]) == ["llama", "secret-llama"]
    one = await client.get("/v1/search", params={"query": "llama", "limit": 1}, headers=auth(users.alice))
    assert len(one.json()["models"]) == 1
    # a bad token is still refused, even where no token is needed
    refused = await client.get("/v1/search", params={"query": "llama"}, headers=auth("r8_wrong"))
    assert refused.status_code == 401
