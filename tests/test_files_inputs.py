"""File inputs: own file URLs resolved inside the server, others passed on or refused (never leaked)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from cogport.db.engine import Database
from cogport.errors import ValidationFailed
from cogport.files.tokens import UploadTokens
from cogport.lifecycle import inputs
from cogport.lifecycle.files_in import resolve_inputs
from cogport.ops import accounts
from cogport.ops.principals import Principal
from cogport.settings import Settings
from tests.support.accounts import Users
from tests.support.registry import auth

SCHEMA: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "properties": {
                    "image": {"type": "string", "format": "uri"},
                    "images": {"type": "array", "items": {"type": "string", "format": "uri"}},
                    "text": {"type": "string"},
                },
            }
        }
    }
}
SMALL = b"tiny"
LARGE = b"L" * 100


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.files_inline_max_bytes = 16
    return settings


async def _upload(client: httpx.AsyncClient, token: str, body: bytes, name: str, content_type: str) -> dict[str, Any]:
    response = await client.post("/v1/files", files={"content": (name, body, content_type)}, headers=auth(token))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
async def uploads(client: httpx.AsyncClient, users: Users) -> dict[str, dict[str, Any]]:
    return {
        "small": await _upload(client, users.alice, SMALL, "small.txt", "text/plain"),
        "large": await _upload(client, users.alice, LARGE, "large photo.jpg", "image/jpeg"),
    }


class Resolve:
    def __init__(self, app: FastAPI, database: Database, settings: Settings, users: Users) -> None:
        self.app, self.database, self.settings, self.users = app, database, settings, users

    async def principal(self, token: str) -> Principal:
        async with self.database.session() as session:
            return await accounts.authenticate(session, token)

    async def __call__(
        self,
        payload: dict[str, Any],
        *,
        token: str | None = None,
        schema: dict[str, Any] = SCHEMA,
        any_host: bool = False,
    ) -> dict[str, Any]:
        principal = await self.principal(token or self.users.alice)
        checked = inputs.validate(schema, payload)
        async with self.database.session() as session:
            resolved = await resolve_inputs(
                session,
                self.app.state.storage,
                principal,
                schema,
                checked,
                "http://testserver",
                self.settings,
                any_host=any_host,
            )
            return resolved.value


@pytest.fixture
async def resolve(app: FastAPI, database: Database, settings: Settings, users: Users) -> AsyncIterator[Resolve]:
    yield Resolve(app, database, settings, users)


def data_url(content_type: str, body: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(body).decode()}"


async def test_own_small_file_becomes_a_data_url(resolve: Resolve, uploads: dict[str, dict[str, Any]]) -> None:
    url = uploads["small"]["urls"]["get"]
    assert url == f"http://testserver/v1/files/{uploads['small']['id']}"
    resolved = await resolve({"image": url, "text": url})
    assert resolved["image"] == data_url("text/plain", SMALL)
    assert resolved["text"] == url  # not a file input: text, left alone


async def test_own_large_file_becomes_a_signed_loopback_url(
    resolve: Resolve, uploads: dict[str, dict[str, Any]], client: httpx.AsyncClient
) -> None:
    resolved = (await resolve({"image": uploads["large"]["urls"]["get"]}))["image"]
    parts = urlsplit(resolved)
    assert f"{parts.scheme}://{parts.netloc}" == "http://127.0.0.1:8000"
    assert parts.path == f"/v1/files/{uploads['large']['id']}/download/large%20photo.jpg"
    query = parse_qs(parts.query)
    assert query["owner"] == ["alice"] and set(query) == {"owner", "expiry", "signature"}
    fetched = await client.get(resolved.removeprefix("http://127.0.0.1:8000"), headers={"Authorization": ""})
    assert fetched.status_code == 200
    assert fetched.content == LARGE
    assert fetched.headers["content-type"] == "image/jpeg"


async def test_other_hosts_naming_this_server_and_lists(
    resolve: Resolve, uploads: dict[str, dict[str, Any]], settings: Settings
) -> None:
    file_id = uploads["small"]["id"]
    settings.public_url = "https://cog.example.com"
    variants = [
        f"http://localhost:8000/v1/files/{file_id}",
        f"http://127.0.0.1:8000/v1/files/{file_id}",
        f"https://cog.example.com/v1/files/{file_id}",
        f"http://TestServer/v1/files/{file_id}",
    ]
    resolved = await resolve({"images": [*variants, "https://example.com/cat.png"]})
    assert resolved["images"] == [data_url("text/plain", SMALL)] * 4 + ["https://example.com/cat.png"]


async def test_at_dispatch_own_files_are_known_on_any_host(
    resolve: Resolve, uploads: dict[str, dict[str, Any]], client: httpx.AsyncClient, app: FastAPI, users: Users
) -> None:
    """A queued run is resolved again at dispatch, where the name it was created under (a proxy's, without
    ``public_url``) is unknown: the caller's own uploads and output files are recognised on any host; a
    URL naming nobody's file, or someone else's, is any other URL there (create time refused the latter)."""
    file_id = uploads["small"]["id"]
    proxied = f"http://cogport.example:8080/v1/files/{file_id}"
    token = app.state.upload_tokens.issue()
    output = (await client.put(f"/internal/uploads/{token}/o.txt", content=b"out")).headers["location"]
    chained = "https://cogport.example" + output[output.index("/v1/files/outputs/") :]
    assert await resolve({"images": [proxied, chained]}, any_host=True) == {
        "images": [data_url("text/plain", SMALL), data_url("text/plain", b"out")]
    }
    assert await resolve({"image": proxied}) == {"image": proxied}  # at create: another host, left to fetch
    foreign = {"images": [proxied, "https://example.com/v1/files/doesnotexist"]}
    assert await resolve(foreign, token=users.bob, any_host=True) == foreign  # checked, left to fetch


async def test_someone_elses_file_is_refused_like_a_missing_one(
    resolve: Resolve, uploads: dict[str, dict[str, Any]], users: Users
) -> None:
    with pytest.raises(ValidationFailed) as foreign:
        await resolve({"image": uploads["small"]["urls"]["get"]}, token=users.bob)
    with pytest.raises(ValidationFailed) as missing:
        await resolve({"image": "http://testserver/v1/files/doesnotexist"}, token=users.bob)
    assert foreign.value.status == 422
    [(kind, field, description)] = foreign.value.problems
    assert (kind, field) == ("file_not_found", "input.image")
    assert "tiny" not in description and "alice" not in description
    assert missing.value.problems[0][0] == kind
    with pytest.raises(ValidationFailed) as in_list:
        await resolve({"images": ["https://example.com/a.png", uploads["large"]["urls"]["get"]]}, token=users.bob)
    assert in_list.value.problems[0][1] == "input.images.1"


@pytest.mark.parametrize(
    "value",
    [
        "/etc/passwd",
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "http://127.0.0.1:6379/",
        "http://localhost:5000/predictions",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:8000/x",
    ],
)
async def test_local_and_foreign_schemes_are_422(resolve: Resolve, value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await resolve({"image": value})
    assert caught.value.problems[0][1] == "input.image"


async def test_remote_and_data_urls_pass_unchanged(resolve: Resolve) -> None:
    payload = {
        "image": "https://example.com/a.png",
        "images": ["http://93.184.216.34/b.png", "data:text/plain;base64,aGk="],
    }
    assert await resolve(payload) == payload


@pytest.mark.parametrize(
    "value",
    [
        "http://10.0.0.5/b.png",  # private networks
        "http://192.168.1.1/b.png",
        "http://100.64.0.1/b.png",  # carrier-grade NAT
        "http://[fd00::1]/b.png",
        "http://127%2e0%2e0%2e1:8000/x",  # the encodings coglet's downloader reads another way
        "http://%31%32%37.0.0.1:8000/x",
        "http://127.0.0.1:8000\\@example.com/x",
        "http://user@example.com/x",
    ],
)
async def test_private_and_ambiguous_input_urls_are_422(resolve: Resolve, settings: Settings, value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await resolve({"image": value})
    assert caught.value.problems[0][1] == "input.image"


async def test_private_networks_can_be_allowed(resolve: Resolve, settings: Settings) -> None:
    settings.inputs.allow_private_networks = True
    assert await resolve({"image": "http://10.0.0.5/b.png"}) == {"image": "http://10.0.0.5/b.png"}
    with pytest.raises(ValidationFailed):  # this machine stays refused
        await resolve({"image": "http://127.0.0.1:8000/x"})


async def test_output_urls_chain_into_inputs(
    resolve: Resolve, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    tokens: UploadTokens = app.state.upload_tokens
    token = tokens.issue()
    small = (await client.put(f"/internal/uploads/{token}/a.txt", content=b"out")).headers["location"]
    large = (await client.put(f"/internal/uploads/{token}/b.bin", content=b"B" * 64)).headers["location"]
    resolved = await resolve({"images": [small, large]})
    assert resolved["images"][0] == data_url("text/plain", b"out")
    assert resolved["images"][1] == large  # already the internal loopback URL (no public_url set)
    forged = small.rsplit("/", 2)[0] + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/a.txt"
    with pytest.raises(ValidationFailed):
        await resolve({"image": forged})


async def test_version_without_schema_resolves_own_urls_only(
    resolve: Resolve, uploads: dict[str, dict[str, Any]], users: Users
) -> None:
    url = uploads["small"]["urls"]["get"]
    payload = {"a": url, "b": [url, 3], "c": "/not/checked", "d": 5}
    resolved = await resolve(payload, schema={})
    assert resolved == {
        "a": data_url("text/plain", SMALL),
        "b": [data_url("text/plain", SMALL), 3],
        "c": "/not/checked",
        "d": 5,
    }
    with pytest.raises(ValidationFailed):
        await resolve({"a": url}, schema={}, token=users.bob)


async def test_validate_rejects_non_urls_before_resolution() -> None:
    for value in ("/etc/hostname", "file:///etc/hostname", "s3://bucket/key"):
        with pytest.raises(ValidationFailed) as caught:
            inputs.validate(SCHEMA, {"image": value})
        assert caught.value.problems[0][1] == "input.image"
    with pytest.raises(ValidationFailed):
        inputs.validate(SCHEMA, {"images": ["https://ok.example/a", "/tmp/x"]})


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "[::ffff:127.0.0.1]", "app.localhost"])
async def test_loopback_shorthands_are_refused(resolve: Resolve, host: str) -> None:
    with pytest.raises(ValidationFailed):
        await resolve({"image": f"http://{host}/secret"})
