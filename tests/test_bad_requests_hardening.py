"""Bad input that used to answer 500 (each reproduced against the previous main): now a 4xx problem body."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from fastapi import FastAPI

from cogport.db.engine import Database
from cogport.files.signing import download_query, signing_key
from cogport.files.streams import Digest
from cogport.files.urls import UPLOADS_PATH, download_url, output_url
from cogport.identifiers import new_object_id
from cogport.ops import accounts
from cogport.ops import files as file_ops
from cogport.settings import Settings
from tests.support.accounts import Users
from tests.support.registry import auth

LISTS = ["/v1/predictions", "/v1/trainings", "/v1/models", "/v1/files", "/v1/deployments", "/v1/collections"]


def cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize("value", ["1e12", "nan", "inf", "-inf", "1" * 40])
async def test_cancel_after_out_of_bounds_is_400(client: httpx.AsyncClient, value: str) -> None:
    response = await client.post(
        "/v1/predictions", json={"version": "0" * 64, "input": {}}, headers={"Cancel-After": value}
    )
    assert response.status_code == 400, response.text
    assert "Cancel-After" in response.json()["detail"]


async def test_tampered_cursors_are_400_on_every_list(client: httpx.AsyncClient) -> None:
    deep = "[" * 1500
    bad = [
        deep,
        cursor(json.loads("[" * 900 + "]" * 900)),  # deep JSON inside valid base64
        cursor({"v": "a\u0000b", "t": "x", "d": "next"}),
        cursor({"v": 1, "t": "x" * 5000, "d": "next"}),
        cursor({"v": 10**30, "t": "x", "d": "next"}),
        "%%%",
    ]
    for path in LISTS:
        for raw in bad:
            response = await client.get(path, params={"cursor": raw})
            assert response.status_code == 400, (path, raw[:40], response.status_code, response.text[:200])


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("2026-01-01", 200),  # date-only, as a user types it
        ("2026-01-01T00:00:00", 200),  # no zone: UTC
        ("2026-01-01T00:00:00Z", 200),
        ("9999-12-31T23:59:59Z", 200),  # far off
        ("0001-01-01T00:00:00+05:00", 400),  # before the first representable UTC instant
        ("yesterday", 400),
    ],
)
async def test_date_filters(client: httpx.AsyncClient, value: str, status: int) -> None:
    for path in ("/v1/predictions", "/v1/trainings"):
        for name in ("created_after", "created_before"):
            response = await client.get(path, params={name: value})
            assert response.status_code == status, (path, name, value, response.text)


async def test_secrets_with_any_text_are_wrong_secrets_not_500s(
    client: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    files = {"content": ("a.txt", b"bytes", "text/plain")}
    body = (await client.post("/v1/files", files=files, headers=auth(users.alice))).json()
    query = {**download_query(signing_key(settings), "alice", body["id"], 60), "signature": "é" * 44}
    anonymous = {"Authorization": ""}
    assert (await client.get(download_url("", body["id"], query), headers=anonymous)).status_code == 403
    assert (await client.get(f"/v1/files/outputs/{body['id']}/é/a.txt", headers=anonymous)).status_code == 404
    response = await client.put(f"{UPLOADS_PATH}/local.é/out.txt", content=b"x", headers=anonymous)
    assert 400 <= response.status_code < 500, response.text


async def test_a_filename_with_cr_lf_is_stored_harmlessly(
    client: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    files = {"content": ("evil\r\nX-Injected: 1.txt", b"bytes", "text/plain")}
    created = await client.post("/v1/files", files=files, headers=auth(users.alice))
    assert created.status_code == 201, created.text
    body = created.json()
    assert "\r" not in body["name"] and "\n" not in body["name"]
    query = download_query(signing_key(settings), "alice", body["id"], 60)
    download = await client.get(download_url("", body["id"], query), headers={"Authorization": ""})
    assert download.status_code == 200 and download.content == b"bytes"
    assert "x-injected" not in download.headers
    listing = await client.get("/v1/files", headers=auth(users.alice))
    assert listing.status_code == 200


async def test_request_bodies_are_capped_but_uploads_have_their_own_limit(
    settings: Settings, users: Users, tmp_path: object
) -> None:
    from cogport.app import create_app

    settings.max_request_body_mb = 0.01  # 10 KiB
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            headers = {"Authorization": "Bearer " + str(settings.admin_token)}
            big = {"version": "0" * 64, "input": {"text": "x" * 20_000}}
            response = await client.post("/v1/predictions", json=big, headers=headers)
            assert response.status_code == 413, response.text
            assert response.json()["detail"]
            small = await client.post("/v1/predictions", json={"version": "0" * 64, "input": {}}, headers=headers)
            assert small.status_code == 422  # past the cap: the unknown version is what is wrong
            upload = await client.post(
                "/v1/files", files={"content": ("big.bin", b"x" * 50_000, "application/octet-stream")}, headers=headers
            )
            assert upload.status_code == 201, upload.text


async def test_stored_types_and_names_reach_headers_only_when_well_formed(
    client: httpx.AsyncClient, database: Database, app: FastAPI
) -> None:
    """Output files get their type and name from the model (a data: URL's type, an upload's path): a
    malformed type is served as application/octet-stream and control characters never reach a header."""
    storage = app.state.storage
    served = []
    for content_type, name in (
        ("text/html\r\nSet-Cookie: session=stolen", "page.html"),
        ("text/plain; charset=utf-8", "a\r\nX-Injected: 1.txt"),
        ("image/png", "ok.png"),
    ):
        file_id = new_object_id()
        key = file_ops.storage_key(file_ops.OUTPUT, file_id, "f")
        await storage.put(key, b"bytes")
        digest = Digest()
        digest.update(b"bytes")
        async with database.session() as session:
            row = await file_ops.add(
                session,
                file_id=file_id,
                kind=file_ops.OUTPUT,
                account_id=(await accounts.any_admin(session)).id,  # type: ignore[union-attr]
                name=name,
                content_type=content_type,
                digest=digest,
                storage_key=key,
            )
            token = row.access_token
        response = await client.get(output_url("", file_id, token, name))
        assert response.status_code == 200, response.text
        assert not any(c in value for value in response.headers.values() for c in "\r\n\x00")
        assert "set-cookie" not in response.headers and "x-injected" not in response.headers
        served.append(response.headers["content-type"])
    assert served == ["application/octet-stream", "text/plain; charset=utf-8", "image/png"]
