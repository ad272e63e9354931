"""The Files API: the official Python client, both metadata forms, limits, listing, isolation, downloads."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from typing import Any

import httpx
import pytest

from cogport.files.signing import download_query, download_signature, signing_key
from cogport.files.urls import download_url
from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import auth

LIMIT = 64 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.files_max_bytes = LIMIT
    return settings


async def upload(
    client: httpx.AsyncClient,
    token: str,
    content: bytes = b"hello world",
    *,
    filename: str = "hello.txt",
    content_type: str = "text/plain",
    data: dict[str, str] | None = None,
    extra_files: dict[str, Any] | None = None,
) -> httpx.Response:
    files = {"content": (filename, content, content_type), **(extra_files or {})}
    return await client.post("/v1/files", files=files, data=data or {}, headers=auth(token))


def test_python_client_create_get_list_delete(replicate_env: Any, tmp_path: Any) -> None:
    replicate = replicate_env
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG fake image bytes")
    created = replicate.files.create(path, metadata={"customer_reference_id": 123})
    assert created.name == "photo.png"
    assert created.content_type == "image/png"
    assert created.size == path.stat().st_size
    assert created.etag == hashlib.md5(path.read_bytes()).hexdigest()
    assert created.checksums == {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "md5": created.etag,
    }
    assert created.metadata == {"customer_reference_id": 123}
    assert created.urls["get"].endswith(f"/v1/files/{created.id}")
    assert created.urls["get"].startswith("http")

    second = replicate.files.create(io.BytesIO(b"more"), filename="notes.md")
    assert second.metadata == {}

    fetched = replicate.files.get(created.id)
    assert fetched.id == created.id and fetched.name == "photo.png"
    listed = replicate.files.list()
    assert [f.id for f in listed] == [second.id, created.id]  # newest first

    assert replicate.files.delete(created.id) is True
    with pytest.raises(replicate.exceptions.ReplicateError) as caught:
        replicate.files.get(created.id)
    assert caught.value.status == 404
    assert [f.id for f in replicate.files.list()] == [second.id]


async def test_file_object_matches_the_spec(client: httpx.AsyncClient, users: Users) -> None:
    response = await upload(client, users.alice, data={"metadata": json.dumps({"a": [1, 2]})})
    assert response.status_code == 201, response.text
    body = response.json()
    validate("/files", "post", 201, body)
    assert body["metadata"] == {"a": [1, 2]}
    assert body["etag"] == hashlib.md5(b"hello world").hexdigest()
    assert body["expires_at"] > body["created_at"]
    assert all(isinstance(v, str) for v in [*body["checksums"].values(), *body["urls"].values()])

    got = await client.get(f"/v1/files/{body['id']}", headers=auth(users.alice))
    validate("/files/{file_id}", "get", 200, got.json())
    assert got.json() == body
    listed = await client.get("/v1/files", headers=auth(users.alice))
    validate("/files", "get", 200, listed.json())


async def test_metadata_as_json_blob_part_like_the_js_client(client: httpx.AsyncClient, users: Users) -> None:
    blob = ("blob", json.dumps({"source": "js"}).encode(), "application/json")
    response = await upload(
        client,
        users.alice,
        filename="buffer_1712345678901",
        content_type="application/octet-stream",
        extra_files={"metadata": blob},
    )
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"source": "js"}
    assert response.json()["name"] == "buffer_1712345678901"


async def test_filename_and_type_fields_override_the_part(client: httpx.AsyncClient, users: Users) -> None:
    response = await upload(client, users.alice, data={"filename": "données.csv", "type": "text/csv"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "données.csv"
    assert response.json()["content_type"] == "text/csv"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"metadata": "not json"}, "metadata"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"filename": "é" * 128}, "filename"),
        ({"type": "nonsense"}, "type"),
    ],
)
async def test_bad_fields_are_422(client: httpx.AsyncClient, users: Users, data: dict[str, str], field: str) -> None:
    response = await upload(client, users.alice, data=data)
    assert response.status_code == 422, response.text
    assert response.json()["invalid_fields"][0]["field"] == field
    assert (await client.get("/v1/files", headers=auth(users.alice))).json()["results"] == []


async def test_missing_content_and_non_multipart(client: httpx.AsyncClient, users: Users) -> None:
    response = await client.post(
        "/v1/files", data={"filename": "x"}, files={"other": ("x", b"1")}, headers=auth(users.alice)
    )
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "content"
    response = await client.post("/v1/files", json={"content": "x"}, headers=auth(users.alice))
    assert response.status_code == 400
    assert (
        await client.post("/v1/files", files={"content": ("a", b"1")}, headers={"Authorization": ""})
    ).status_code == 401


async def test_over_the_limit_is_413(client: httpx.AsyncClient, users: Users, settings: Settings) -> None:
    exact = await upload(client, users.alice, b"x" * LIMIT)
    assert exact.status_code == 201, exact.text
    response = await upload(client, users.alice, b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["detail"] == f"Files must be less than {LIMIT} bytes in size"
    validate("/files", "post", 413, response.json())
    listed = (await client.get("/v1/files", headers=auth(users.alice))).json()["results"]
    assert len(listed) == 1
    leftovers = [p for p in (settings.data_dir / "files" / "uploads").iterdir()]
    assert len(leftovers) == 1  # the failed upload left no bytes behind


async def test_content_length_over_the_limit_is_refused_before_reading(client: httpx.AsyncClient, users: Users) -> None:
    consumed = False

    async def body() -> Any:
        nonlocal consumed
        consumed = True
        yield b"--b\r\n"

    headers = {
        **auth(users.alice),
        "Content-Type": "multipart/form-data; boundary=b",
        "Content-Length": str(50 * 1024 * 1024),
    }
    response = await client.post("/v1/files", content=body(), headers=headers)
    assert response.status_code == 413
    assert not consumed


def test_default_limit_message() -> None:
    from cogport.files.streams import too_large

    assert too_large(100 * 1024 * 1024).detail == "Files must be less than 100MB in size"


async def test_pagination_newest_first(client: httpx.AsyncClient, users: Users, monkeypatch: Any) -> None:
    from cogport.ops import files as file_ops

    ids = [(await upload(client, users.alice, str(i).encode())).json()["id"] for i in range(5)]
    real = file_ops.list_uploads

    async def small_pages(*args: Any, **kwargs: Any) -> Any:
        return await real(*args, **{**kwargs, "limit": 2})

    monkeypatch.setattr(file_ops, "list_uploads", small_pages)
    seen: list[str] = []
    url: str | None = "/v1/files"
    while url:
        page = (await client.get(url, headers=auth(users.alice))).json()
        seen += [f["id"] for f in page["results"]]
        url = page["next"]
        assert url is None or url.startswith("http://testserver/v1/files?cursor=")
    assert seen == ids[::-1]


async def test_other_accounts_cannot_see_or_delete(client: httpx.AsyncClient, users: Users) -> None:
    file_id = (await upload(client, users.alice)).json()["id"]
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/v1/files/{file_id}", headers=auth(users.bob))
        assert response.status_code == 404
        assert response.json()["detail"] == "File not found"
        assert response.headers["content-type"].startswith("application/problem+json")
        validate("/files/{file_id}", method.lower(), 404, response.json())
    assert (await client.get("/v1/files", headers=auth(users.bob))).json()["results"] == []
    assert (await client.get(f"/v1/files/{file_id}", headers=auth(users.alice))).status_code == 200
    assert (await client.get("/v1/files/nosuchfile", headers=auth(users.alice))).status_code == 404


async def test_delete_removes_bytes(client: httpx.AsyncClient, users: Users, settings: Settings) -> None:
    file_id = (await upload(client, users.alice)).json()["id"]
    folder = settings.data_dir / "files" / "uploads" / file_id
    assert folder.is_dir()
    response = await client.delete(f"/v1/files/{file_id}", headers=auth(users.alice))
    assert response.status_code == 204
    assert response.content == b""
    assert not folder.exists()
    assert (await client.delete(f"/v1/files/{file_id}", headers=auth(users.alice))).status_code == 404


async def test_signed_download(client: httpx.AsyncClient, users: Users, settings: Settings) -> None:
    body = (await upload(client, users.alice, b"secret bytes", filename="a b.txt")).json()
    key = signing_key(settings)
    query = download_query(key, "alice", body["id"], 60)
    anonymous = {"Authorization": ""}

    for url in (download_url("", body["id"], query), download_url("", body["id"], query, name="a b.txt")):
        response = await client.get(url, headers=anonymous)
        assert response.status_code == 200, response.text
        assert response.content == b"secret bytes"
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["etag"] == f'"{body["etag"]}"'
        assert response.headers["content-length"] == "12"

    expired_at = int(time.time()) - 1
    expired = {
        "owner": "alice",
        "expiry": str(expired_at),
        "signature": download_signature(key, "alice", body["id"], expired_at),
    }
    tampered = {**query, "expiry": str(int(query["expiry"]) + 1000)}
    forged = {**query, "signature": base64.b64encode(b"x" * 32).decode()}
    as_bob = download_query(key, "bob", body["id"], 60)
    for bad, status in ((expired, 403), (tampered, 403), (forged, 403), (as_bob, 404), ({}, 403)):
        response = await client.get(f"/v1/files/{body['id']}/download", params=bad, headers=anonymous)
        assert response.status_code == status, (bad, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    other_key = download_query(b"another secret key", "alice", body["id"], 60)
    assert (await client.get(f"/v1/files/{body['id']}/download", params=other_key)).status_code == 403

    await client.delete(f"/v1/files/{body['id']}", headers=auth(users.alice))
    gone = await client.get(f"/v1/files/{body['id']}/download", params=query, headers=anonymous)
    assert gone.status_code == 404
    validate("/files/{file_id}/download", "get", 404, gone.json())


def test_signing_key_is_generated_once_and_kept(settings: Settings) -> None:
    first = signing_key(settings)
    path = settings.data_dir / "secrets" / "files_signing_key"
    assert path.is_file()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(first) == 32
    fresh = Settings(data_dir=settings.data_dir, database_url="sqlite://")
    from cogport.files import signing

    signing._keys.clear()
    assert signing_key(fresh) == first
    configured = Settings(data_dir=settings.data_dir, files_signing_secret="s" * 32)
    assert signing_key(configured) == b"s" * 32
    with pytest.raises(ValueError):
        Settings(files_signing_secret="short")


def test_uploads_over_a_live_server(live_server: LiveServer) -> None:
    """Real sockets: a body at the limit, one byte over it (refused mid-stream), one announced far over it."""
    big = b"0123456789abcdef" * (LIMIT // 16)
    with httpx.Client(base_url=live_server.url, headers=auth(ADMIN_TOKEN), timeout=30) as c:
        ok = c.post("/v1/files", files={"content": ("big.bin", big, "application/octet-stream")})
        assert ok.status_code == 201, ok.text
        assert ok.json()["checksums"]["sha256"] == hashlib.sha256(big).hexdigest()
        too_big = c.post("/v1/files", files={"content": ("big.bin", big + b"!", "application/octet-stream")})
        assert too_big.status_code == 413
        huge = c.post(
            "/v1/files", files={"content": ("huge.bin", b"x" * (8 * 1024 * 1024), "application/octet-stream")}
        )
        assert huge.status_code == 413
        assert huge.json()["detail"] == f"Files must be less than {LIMIT} bytes in size"


async def test_oversized_or_malformed_bodies_are_400(client: httpx.AsyncClient, users: Users) -> None:
    huge_metadata = json.dumps({"x": "y" * (1024 * 1024)})
    response = await upload(client, users.alice, data={"metadata": huge_metadata})
    assert response.status_code == 400
    headers = {**auth(users.alice), "Content-Type": "multipart/form-data; boundary=xyz"}
    garbage = await client.post("/v1/files", content=b"--xyz\r\nno headers here\r\n\r\n--nope", headers=headers)
    assert garbage.status_code == 400
    two = [("content", ("a", b"1")), ("content", ("b", b"2"))]
    assert (await client.post("/v1/files", files=two, headers=auth(users.alice))).status_code == 400
    assert (await client.get("/v1/files", headers=auth(users.alice))).json()["results"] == []
