"""Models over HTTP (in-process): create, get, update, delete, readme, examples, list and search."""

from __future__ import annotations

import asyncio
import json

import httpx

from cogport.db.engine import Database
from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import add_version, auth, create_model

MODEL = "/models/{model_owner}/{model_name}"


async def test_create_and_get_model(client: httpx.AsyncClient, users: Users) -> None:
    body = {
        "owner": "alice",
        "name": "hot-dog",
        "visibility": "public",
        "hardware": "cpu",
        "description": "Detect hot dogs",
        "github_url": "https://github.com/alice/hot-dog",
    }
    response = await client.post("/v1/models", json=body, headers=auth(users.alice))
    assert response.status_code == 201, response.text
    created = response.json()
    validate("/models", "post", 201, created)
    assert created["owner"] == "alice"
    assert created["name"] == "hot-dog"
    assert created["run_count"] == 0
    assert created["latest_version"] is None
    assert created["default_example"] is None
    assert created["hardware"] == "cpu"
    assert created["url"].startswith("http")

    response = await client.get("/v1/models/alice/hot-dog", headers=auth(users.bob))
    assert response.status_code == 200
    validate(MODEL, "get", 200, response.json())
    assert response.json()["description"] == "Detect hot dogs"


async def test_get_model_includes_latest_version(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    await create_model(client, users.alice, "alice/versioned")
    first = await add_version(database, "alice/versioned")
    second = await add_version(database, "alice/versioned")
    response = await client.get("/v1/models/alice/versioned", headers=auth(users.alice))
    body = response.json()
    validate(MODEL, "get", 200, body)
    assert body["latest_version"]["id"] == second != first
    assert body["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"]["type"] == "object"
    assert isinstance(body["latest_version"]["cog_version"], str)


async def test_org_member_creates_for_org_and_others_cannot(client: httpx.AsyncClient, users: Users) -> None:
    created = await create_model(client, users.alice, "acme/shared", visibility="private")
    assert created["owner"] == "acme"
    # alice (a member) sees the org's private model; bob does not
    assert (await client.get("/v1/models/acme/shared", headers=auth(users.alice))).status_code == 200
    assert (await client.get("/v1/models/acme/shared", headers=auth(users.bob))).status_code == 404

    for owner in ("acme", "alice", "nobody"):
        response = await client.post(
            "/v1/models",
            json={"owner": owner, "name": "x", "visibility": "public", "hardware": "cpu"},
            headers=auth(users.bob),
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "owner" in response.json()["detail"]


async def test_create_rejects_unknown_hardware_and_visibility(client: httpx.AsyncClient, users: Users) -> None:
    base = {"owner": "alice", "name": "m", "visibility": "public", "hardware": "cpu"}
    response = await client.post("/v1/models", json={**base, "hardware": "gpu-nope"}, headers=auth(users.alice))
    assert response.status_code == 422
    assert "gpu-nope" in response.json()["detail"]
    assert "cpu" in response.json()["detail"]

    response = await client.post("/v1/models", json={**base, "visibility": "secret"}, headers=auth(users.alice))
    assert response.status_code == 422
    problem = response.json()
    assert problem["status"] == 422
    assert problem["invalid_fields"][0]["field"] == "visibility"
    assert problem["invalid_fields"][0]["type"] == "enum"


async def test_create_body_errors_are_problems_not_500(client: httpx.AsyncClient, users: Users) -> None:
    headers = {**auth(users.alice), "Content-Type": "application/json"}
    base = {"owner": "alice", "name": "m", "visibility": "public", "hardware": "cpu"}
    cases: list[tuple[bytes, int, str]] = [
        (b"{not json", 400, "not valid JSON"),
        (b"", 422, "body"),
        (b"[]", 422, "body"),
        (b'"alice/m"', 422, "body"),
        (json.dumps({**base, "name": 5}).encode(), 422, "name"),
        (json.dumps({**base, "visibility": True}).encode(), 422, "visibility"),
        (json.dumps({**base, "name": "Has Spaces"}).encode(), 422, "name"),
        (json.dumps({**base, "colour": "red"}).encode(), 422, "Additional property colour is not allowed"),
        (json.dumps({"owner": "alice"}).encode(), 422, "name is required"),
        (json.dumps({**base, "github_url": "not a url"}).encode(), 422, "github_url"),
        (json.dumps({**base, "github_url": "https://x.com/" + "a" * 1000}).encode(), 422, "at most 500"),
        (json.dumps({**base, "description": "nul \u0000 inside"}).encode(), 422, "NUL"),
        (
            b'{"owner": "alice", "name": "m", "visibility": "public", "hardware": "cpu", "x": "\xff"}',
            400,
            "could not be parsed",
        ),
    ]
    for content, status, needle in cases:
        response = await client.post("/v1/models", content=content, headers=headers)
        assert response.status_code == status, (content, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["status"] == status
        assert problem["title"]
        assert needle in problem["detail"], (content, problem)

    response = await client.post("/v1/models", json=base, headers=auth(users.alice))
    assert response.status_code == 201
    again = await client.post("/v1/models", json=base, headers=auth(users.alice))
    assert again.status_code == 409
    assert "alice/m" in again.json()["detail"]


async def test_update_model(client: httpx.AsyncClient, users: Users) -> None:
    await create_model(client, users.alice, "alice/editable")
    changes = {
        "description": "New description",
        "readme": "# Editable\n\nHello",
        "weights_url": "https://example.com/weights",
        "paper_url": "https://arxiv.org/abs/2504.17639",
    }
    response = await client.patch("/v1/models/alice/editable", json=changes, headers=auth(users.alice))
    assert response.status_code == 200, response.text
    validate(MODEL, "patch", 200, response.json())
    assert response.json()["description"] == "New description"
    assert response.json()["paper_url"] == "https://arxiv.org/abs/2504.17639"

    readme = await client.get("/v1/models/alice/editable/readme", headers=auth(users.bob))
    assert readme.status_code == 200
    assert readme.headers["content-type"].startswith("text/plain")
    assert readme.text == "# Editable\n\nHello"

    # fields the spec does not allow, wrong types, someone else's model
    bad = await client.patch("/v1/models/alice/editable", json={"visibility": "private"}, headers=auth(users.alice))
    assert bad.status_code == 422
    bad = await client.patch("/v1/models/alice/editable", json={"description": 3}, headers=auth(users.alice))
    assert bad.status_code == 422
    foreign = await client.patch("/v1/models/alice/editable", json={"description": "x"}, headers=auth(users.bob))
    assert foreign.status_code == 403
    assert (await client.get("/v1/models/alice/editable", headers=auth(users.bob))).json()["description"] == (
        "New description"
    )


async def test_readme_missing_and_examples(client: httpx.AsyncClient, users: Users) -> None:
    await create_model(client, users.alice, "alice/plain")
    readme = await client.get("/v1/models/alice/plain/readme", headers=auth(users.alice))
    assert readme.status_code == 404
    assert readme.json()["status"] == 404
    examples = await client.get("/v1/models/alice/plain/examples", headers=auth(users.alice))
    assert examples.status_code == 200
    validate(MODEL + "/examples", "get", 200, examples.json())
    assert examples.json()["results"] == []


async def test_delete_model_rules(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    await create_model(client, users.alice, "alice/public")
    await create_model(client, users.alice, "alice/private", visibility="private")
    await create_model(client, users.alice, "alice/empty", visibility="private")
    await add_version(database, "alice/private")

    public = await client.delete("/v1/models/alice/public", headers=auth(users.alice))
    assert public.status_code == 409
    assert "private" in public.json()["detail"]
    has_versions = await client.delete("/v1/models/alice/private", headers=auth(users.alice))
    assert has_versions.status_code == 409
    assert "version" in has_versions.json()["detail"]
    # bob cannot even tell that alice's private model exists
    hidden = await client.delete("/v1/models/alice/empty", headers=auth(users.bob))
    assert hidden.status_code == 404
    assert hidden.json()["detail"] == "The requested resource could not be found."

    deleted = await client.delete("/v1/models/alice/empty", headers=auth(users.alice))
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get("/v1/models/alice/empty", headers=auth(users.alice))).status_code == 404


async def test_private_model_is_404_for_everything_under_it(
    client: httpx.AsyncClient, users: Users, database: Database
) -> None:
    await create_model(client, users.alice, "alice/secret", visibility="private", description="secret sauce")
    await client.patch("/v1/models/alice/secret", json={"readme": "# hi"}, headers=auth(users.alice))
    vid = await add_version(database, "alice/secret")
    paths = [
        ("GET", "/v1/models/alice/secret"),
        ("PATCH", "/v1/models/alice/secret"),
        ("DELETE", "/v1/models/alice/secret"),
        ("GET", "/v1/models/alice/secret/readme"),
        ("GET", "/v1/models/alice/secret/examples"),
        ("GET", "/v1/models/alice/secret/versions"),
        ("GET", f"/v1/models/alice/secret/versions/{vid}"),
        ("DELETE", f"/v1/models/alice/secret/versions/{vid}"),
    ]
    missing = [(method, path.replace("secret", "nothing")) for method, path in paths]
    for method, path in paths + missing:
        kwargs = {"json": {"description": "x"}} if method == "PATCH" else {}
        response = await client.request(method, path, headers=auth(users.bob), **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {
            "title": "Not found",
            "detail": "The requested resource could not be found.",
            "status": 404,
        }
    # and it is in no listing or search bob can see
    listed = await client.get("/v1/models", headers=auth(users.bob))
    assert [m["name"] for m in listed.json()["results"]] == []
    found = await client.request("QUERY", "/v1/models", content=b"secret", headers=auth(users.bob))
    assert found.json()["results"] == []
    search = await client.get("/v1/search", params={"query": "secret"}, headers=auth(users.bob))
    assert search.json()["models"] == []


async def test_list_models_public_only_and_sorted(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    await create_model(client, users.alice, "alice/first")
    await create_model(client, users.bob, "bob/second")
    await create_model(client, users.alice, "alice/hidden", visibility="private")
    await create_model(client, users.alice, "alice/third")
    await add_version(database, "alice/first")  # first now has the newest version

    async def names(**params: str) -> list[str]:
        response = await client.get("/v1/models", params=params, headers=auth(users.alice))
        assert response.status_code == 200, response.text
        validate("/models", "get", 200, response.json())
        return [f"{m['owner']}/{m['name']}" for m in response.json()["results"]]

    assert await names() == ["alice/first", "alice/third", "bob/second"]
    assert await names(sort_by="latest_version_created_at", sort_direction="asc") == [
        "bob/second",
        "alice/third",
        "alice/first",
    ]
    assert await names(sort_by="model_created_at") == ["alice/third", "bob/second", "alice/first"]
    assert await names(sort_by="model_created_at", sort_direction="asc") == [
        "alice/first",
        "bob/second",
        "alice/third",
    ]
    bad = await client.get("/v1/models", params={"sort_by": "name"}, headers=auth(users.alice))
    assert bad.status_code == 422
    assert "sort_by" in bad.json()["detail"]


async def test_search_models_with_query_method(client: httpx.AsyncClient, users: Users) -> None:
    await create_model(client, users.alice, "alice/llama-chat", description="Chat with a llama")
    await create_model(client, users.bob, "bob/sdxl", description="Images of llamas")
    await create_model(client, users.bob, "bob/whisper")
    await create_model(client, users.bob, "bob/quiet")  # no description: must still match the spec
    await create_model(client, users.alice, "alice/private-llama", visibility="private")

    async def search(content: bytes, token: str) -> list[str]:
        response = await client.request(
            "QUERY", "/v1/models", content=content, headers={**auth(token), "Content-Type": "text/plain"}
        )
        assert response.status_code == 200, response.text
        validate("/models", "query", 200, response.json())
        return sorted(f"{m['owner']}/{m['name']}" for m in response.json()["results"])

    assert await search(b"llama", users.bob) == ["alice/llama-chat", "bob/sdxl"]
    # the JS client JSON-quotes the text
    assert await search(b'"LLAMA"', users.bob) == ["alice/llama-chat", "bob/sdxl"]
    # owners find their own private models too
    assert await search(b"llama", users.alice) == ["alice/llama-chat", "alice/private-llama", "bob/sdxl"]
    assert await search(b"bob/", users.bob) == ["bob/quiet", "bob/sdxl", "bob/whisper"]
    # LIKE wildcards are matched literally
    assert await search(b"%", users.bob) == []
    assert await search(b"_", users.bob) == []

    empty = await client.request("QUERY", "/v1/models", content=b"  ", headers=auth(users.bob))
    assert empty.status_code == 400
    assert empty.json()["detail"]


async def test_nul_characters_are_refused_not_500(client: httpx.AsyncClient, users: Users) -> None:
    """PostgreSQL cannot store or compare text with NUL: every way in gets a 4xx first."""
    await create_model(client, users.alice, "alice/m")
    headers = auth(users.alice)
    for method, path in [
        ("GET", "/v1/models/alice/m%00"),
        ("GET", "/v1/models/al%00ice/m/versions"),
        ("GET", "/v1/models/alice/m/versions/ab%00cd"),
        ("GET", "/v1/collections/sl%00ug"),
        ("DELETE", "/v1/models/alice/m%00"),
    ]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 404, (path, response.text)
    for path in ["/v1/search?query=a%00b", "/v1/models?cursor=%00"]:
        response = await client.get(path, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert "NUL" in response.json()["detail"]
    response = await client.request("QUERY", "/v1/models", content=b"a\x00b", headers=headers)
    assert response.status_code == 400
    response = await client.patch("/v1/models/alice/m", json={"readme": "a\x00b"}, headers=headers)
    assert response.status_code == 422
    response = await client.post("/admin/v1/collections", json={"slug": "c", "name": "C", "models": ["alice/m\x00"]})
    assert response.status_code == 422
    response = await client.post("/admin/v1/accounts", json={"username": "carol", "name": "x" * 201})
    assert response.status_code == 422
    response = await client.post("/admin/v1/accounts/alice/tokens", json={"label": "x" * 201})
    assert response.status_code == 422


async def test_concurrent_creates_of_the_same_name_conflict_cleanly(client: httpx.AsyncClient, users: Users) -> None:
    """The existence checks race; the unique constraints decide, and every loser gets a 409 (not a 500)."""
    model = {"owner": "alice", "name": "race", "visibility": "public", "hardware": "cpu"}
    requests = [
        ("/v1/models", model, auth(users.alice)),
        ("/admin/v1/accounts", {"username": "zed"}, {}),
        ("/admin/v1/collections", {"slug": "race", "name": "Race"}, {}),
    ]
    for path, body, headers in requests:
        responses = await asyncio.gather(*(client.post(path, json=body, headers=headers) for _ in range(6)))
        assert sorted(r.status_code for r in responses) == [201] + [409] * 5, [r.text for r in responses]
        assert all("already exists" in r.json()["detail"] for r in responses if r.status_code == 409)
