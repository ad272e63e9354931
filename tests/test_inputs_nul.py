"""NUL characters (PostgreSQL cannot store them in text or JSONB) are refused with a 4xx everywhere."""

from __future__ import annotations

import httpx
import pytest

from cogport.db.engine import Database
from cogport.errors import ValidationFailed
from cogport.lifecycle import inputs
from tests.support.accounts import Users
from tests.support.registry import add_version, auth, create_model


def test_validate_refuses_nul_at_any_depth() -> None:
    with pytest.raises(ValidationFailed) as info:
        inputs.validate({}, {"a": "x\x00", "b": [1, {"c\x00": "d"}], "ok": "fine"})
    assert [problem[1] for problem in info.value.problems] == ["input.a", "input.b.1.c\\u0000"]
    assert all("NUL" in problem[2] for problem in info.value.problems)
    assert inputs.validate({}, {"text": "no nul here"}).value == {"text": "no nul here"}


async def test_prediction_input_with_nul_is_422(client: httpx.AsyncClient, database: Database, users: Users) -> None:
    await create_model(client, users.alice, "alice/nul", visibility="private")
    vid = await add_version(database, "alice/nul")
    for value in ("a\u0000b", ["a", "\u0000"], {"k": "\u0000"}):
        response = await client.post(
            "/v1/predictions", json={"version": vid, "input": {"text": value}}, headers=auth(users.alice)
        )
        assert response.status_code == 422, response.text
        assert "NUL" in response.json()["detail"]
    response = await client.post(
        "/v1/models/alice/nul/predictions", json={"input": {"te\u0000xt": "a"}}, headers=auth(users.alice)
    )
    assert response.status_code == 422, response.text
    listing = await client.get("/v1/predictions", headers=auth(users.alice))
    assert listing.json()["results"] == []


async def test_nul_in_any_path_or_query_is_4xx(client: httpx.AsyncClient, users: Users) -> None:
    """The guard is app-wide: routers that do not declare it are covered too."""
    headers = auth(users.alice)
    for path in ("/v1/predictions/a%00b", "/v1/trainings/a%00b", "/v1/files/a%00b", "/v1/predictions/a%00b/cancel"):
        method = "POST" if path.endswith("cancel") else "GET"
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 404, (path, response.text)
    for path in ("/v1/predictions?cursor=%00", "/v1/trainings?cursor=a%00", "/v1/files?x=%00"):
        response = await client.get(path, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert "NUL" in response.json()["detail"]


async def test_lone_surrogates_are_refused_with_422_and_nothing_breaks(
    client: httpx.AsyncClient, database: Database, users: Users
) -> None:
    """``"\\ud800"`` is a valid JSON escape that no UTF-8 encodes: a row holding one could never be answered."""
    await create_model(client, users.alice, "alice/sur", visibility="private")
    vid = await add_version(database, "alice/sur")
    headers = {**auth(users.alice), "Content-Type": "application/json"}
    bodies = [
        body.replace("VID", vid)
        for body in (
            '{"version": "VID", "input": {"text": "a\\ud800b"}}',
            '{"version": "VID", "input": {"text": ["ok", "\\udfff"]}}',
            '{"version": "VID", "input": {"k\\ud800": "v"}}',
            '{"version": "VID", "input": {"text": "a"}, "webhook": "https://example.com/\\ud800"}',
        )
    ]
    for body in bodies:
        response = await client.post("/v1/predictions", content=body.encode(), headers=headers)
        assert response.status_code == 422, (body, response.status_code, response.text)
        assert response.json()["detail"]  # a problem body that could be encoded, not a 500
    response = await client.post(
        "/v1/predictions", content=bodies[0].encode(),
        headers={**headers, "Prefer": "wait=1"},
    )  # fmt: skip
    assert response.status_code == 422  # at once, not after the wait
    listing = await client.get("/v1/predictions", headers=auth(users.alice))
    assert listing.status_code == 200 and listing.json()["results"] == []
    with pytest.raises(ValidationFailed) as info:
        inputs.validate({}, {"a": "\ud800"})
    assert "surrogate" in info.value.problems[0][2]


async def test_file_metadata_that_cannot_be_stored_is_422(client: httpx.AsyncClient, users: Users) -> None:
    """Found by the fuzzer on PostgreSQL: a NUL in an uploaded file's metadata (JSONB refuses it) was a 500."""
    for metadata in ('{"k": "a\\u0000b"}', '{"a\\u0000": 1}', '{"k": ["\\ud800"]}', '{"k": {"deep": NaN}}'):
        response = await client.post(
            "/v1/files",
            files={"content": ("a.txt", b"hello", "text/plain")},
            data={"metadata": metadata},
            headers=auth(users.alice),
        )
        assert response.status_code == 422, (metadata, response.status_code, response.text)
        assert "metadata" in response.json()["detail"]
    listing = await client.get("/v1/files", headers=auth(users.alice))
    assert listing.status_code == 200 and listing.json()["results"] == []
    ok = await client.post(
        "/v1/files",
        files={"content": ("a.txt", b"hello", "text/plain")},
        data={"metadata": '{"k": "fine", "n": [1, 2.5]}'},
        headers=auth(users.alice),
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["metadata"] == {"k": "fine", "n": [1, 2.5]}
