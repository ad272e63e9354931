"""Model output files: the loopback upload receiver, capability URLs, linking to predictions, deletion."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cogport.db.engine import Database
from cogport.db.tables import Account, StoredFile
from cogport.db.writer import Tx, run_in
from cogport.files.signing import signing_key
from cogport.files.tokens import UploadTokens
from cogport.files.urls import own_output, upload_url
from cogport.lifecycle.files_out import DECODE_CHARS, OutputFiles
from cogport.ops import files as file_ops
from cogport.settings import Settings
from tests.conftest import LiveServer
from tests.support.accounts import Users
from tests.support.registry import add_prediction, add_version, create_model


@pytest.fixture
def tokens(app: FastAPI) -> UploadTokens:
    registry: UploadTokens = app.state.upload_tokens
    return registry


def upload_path(token: str, name: str) -> str:
    return f"/internal/uploads/{token}/{name}"


async def put(client: httpx.AsyncClient, token: str, name: str, body: bytes, **headers: str) -> httpx.Response:
    return await client.put(upload_path(token, name), content=body, headers={"Authorization": "", **headers})


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def test_same_basename_twice_gives_two_files(
    client: httpx.AsyncClient, tokens: UploadTokens, settings: Settings
) -> None:
    token = tokens.issue()
    first = await put(client, token, "out0.txt", b"first", **{"Content-Type": "text/plain"})
    second = await put(client, token, "out0.txt", b"second")
    assert first.status_code == second.status_code == 201
    one, two = first.headers["location"], second.headers["location"]
    assert one != two
    assert one.startswith("http://127.0.0.1:8000/v1/files/outputs/")  # no public_url: the internal base
    assert one.endswith("/out0.txt") and two.endswith("/out0.txt")

    for url, body in ((one, b"first"), (two, b"second")):
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer r8_anything_the_python_client_sends"}):
            response = await client.get(path_of(url), headers=headers)
            assert response.status_code == 200, response.text
            assert response.content == body
            assert response.headers["content-type"].startswith("text/plain")  # sent, or guessed from the name
            assert response.headers["content-length"] == str(len(body))
            assert response.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    head = await client.head(path_of(one))
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "5"
    cached = await client.get(path_of(one), headers={"If-None-Match": head.headers["etag"]})
    assert cached.status_code == 304


async def test_location_uses_public_url_and_names_are_sanitised(
    client: httpx.AsyncClient, tokens: UploadTokens, settings: Settings
) -> None:
    settings.public_url = "https://files.example.com"
    token = tokens.issue("instance-1")
    response = await put(client, token, "sub%2F..%2Fimage%20one.png", b"\x89PNG")
    assert response.status_code == 201
    url = response.headers["location"]
    assert url.startswith("https://files.example.com/v1/files/outputs/")
    assert url.endswith("/image%20one.png")
    got = await client.get(path_of(url))
    assert got.headers["content-type"] == "image/png"
    # A trailing slash on --upload-url may make coglet send a double slash: still one file.
    double = await client.put(f"/internal/uploads/{token}//x.json", content=b"{}")
    assert double.status_code == 201 and double.headers["location"].endswith("/x.json")


async def test_receiver_refuses_other_hosts_bad_and_revoked_tokens(app: FastAPI, tokens: UploadTokens) -> None:
    token = tokens.issue()
    remote = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=remote, base_url="http://testserver") as outsider:
        assert (await put(outsider, token, "a.txt", b"x")).status_code == 403
    local = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=local, base_url="http://testserver") as client:
        proxied = await put(client, token, "a.txt", b"x", **{"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403
        assert (await put(client, token + "x", "a.txt", b"x")).status_code == 403
        assert (await put(client, "no-dot-token", "a.txt", b"x")).status_code == 403
        assert (await put(client, token, "a.txt", b"x")).status_code == 201
        tokens.revoke(token)
        assert token not in tokens.active()
        assert (await put(client, token, "a.txt", b"x")).status_code == 403


def test_tokens_verify_across_processes_sharing_the_key(settings: Settings) -> None:
    key = signing_key(settings)
    here, there = UploadTokens(key), UploadTokens(key)
    token = here.issue()
    assert there.is_valid(token)
    assert not UploadTokens(b"another key").is_valid(token)
    assert upload_url(settings, token) == f"http://127.0.0.1:8000/internal/uploads/{token}/"
    with pytest.raises(ValueError):
        here.issue("bad/name")


async def test_wrong_capability_is_404(client: httpx.AsyncClient, tokens: UploadTokens) -> None:
    url = (await put(client, tokens.issue(), "o.txt", b"x")).headers["location"]
    _, token = own_output(url) or ("", "")
    wrong = path_of(url).replace(token, "A" * len(token))
    response = await client.get(wrong)
    assert response.status_code == 404
    assert response.json()["detail"] == "File not found"


async def test_link_outputs_and_delete_prediction_files(
    client: httpx.AsyncClient,
    users: Users,
    app: FastAPI,
    database: Database,
    tokens: UploadTokens,
    settings: Settings,
) -> None:
    await create_model(client, users.alice, "alice/m")
    vid = await add_version(database, "alice/m")
    prediction_id = await add_prediction(database, "alice/m", vid, "alice")
    token = tokens.issue()
    urls = [(await put(client, token, f"o{i}.txt", f"out {i}".encode())).headers["location"] for i in range(3)]
    stray = (await put(client, token, "stray.txt", b"never in an output")).headers["location"]
    output: Any = {"images": [urls[0], urls[1]], "nested": {"file": urls[2]}, "text": "not a file"}

    async with database.session() as session:
        alice = (await session.execute(select(Account).where(Account.username == "alice"))).scalar_one()

        def link(prediction: str) -> Callable[[Tx], int]:
            return lambda tx: file_ops.link_outputs(tx, prediction, alice.id, output)

        assert await run_in(session, link(prediction_id)) == 3
        assert await run_in(session, link(prediction_id)) == 3  # idempotent
        assert await run_in(session, link("another")) == 0  # already linked elsewhere
    async with database.session() as session:
        rows = (await session.execute(select(StoredFile).where(StoredFile.kind == "output"))).scalars().all()
        by_id = {row.id: row for row in rows}
        for url in urls:
            row = by_id[(own_output(url) or ("", ""))[0]]
            assert (row.prediction_id, row.account_id, row.expires_at) == (prediction_id, alice.id, None)
        orphan = by_id[(own_output(stray) or ("", ""))[0]]
        assert orphan.prediction_id is None and orphan.expires_at is not None

    storage = app.state.storage
    async with database.session() as session:
        assert await file_ops.delete_prediction_files(session, storage, [prediction_id]) == 3
    for url in urls:
        assert (await client.get(path_of(url))).status_code == 404
    assert (await client.get(path_of(stray))).status_code == 200
    remaining = list((settings.data_dir / "files" / "outputs").iterdir())
    assert [p.name for p in remaining] == [(own_output(stray) or ("", ""))[0]]


def test_upload_over_real_loopback_sockets(live_server: LiveServer) -> None:
    live_server.settings.internal_url = live_server.url
    tokens: UploadTokens = live_server.app.state.upload_tokens
    target = upload_url(live_server.settings, tokens.issue())
    body = b"\x00\x01binary" * 10000
    with httpx.Client(timeout=30) as http:
        response = http.put(target + "result.bin", content=body)
        assert response.status_code == 201, response.text
        location = response.headers["location"]
        assert location.startswith(live_server.url + "/v1/files/outputs/")
        assert http.get(location).content == body
        assert http.get(location, headers={"Authorization": "Bearer whatever"}).content == body


def test_rebase_outputs_onto_the_request_base(settings: Settings) -> None:
    from cogport.files.urls import rebase_outputs

    internal = "http://127.0.0.1:8000/v1/files/outputs/abc/TOKENTOKENTOKENTOKEN/o.png"
    output = {"files": [internal, "https://elsewhere.example/x.png"], "text": "http://127.0.0.1:8000/other"}
    rebased = rebase_outputs(output, settings, "https://api.example.com/")
    assert rebased == {
        "files": ["https://api.example.com/v1/files/outputs/abc/TOKENTOKENTOKENTOKEN/o.png", output["files"][1]],
        "text": output["text"],
    }
    settings.public_url = "https://public.example.com"
    assert rebase_outputs(output, settings, "https://api.example.com") == output


async def test_inline_outputs_are_kept_like_uploads(
    app: FastAPI, client: httpx.AsyncClient, database: Database, settings: Settings
) -> None:
    """A ``data:`` URL coglet sends (a list-of-files output) becomes an output file just like an upload."""
    sink = OutputFiles(database, app.state.storage, settings)
    body = bytes(range(256)) * 3000  # several decode slices, and a length that needs padding
    url = await sink.keep("data:image/png;base64," + base64.b64encode(body).decode(), 3)
    assert url.startswith("http://127.0.0.1:8000/v1/files/outputs/") and url.endswith("/output-3.png")
    got = await client.get(path_of(url))
    assert got.status_code == 200 and got.content == body and got.headers["content-type"] == "image/png"
    plain = await sink.keep("data:,a%20b", 0)  # not base64: percent-encoded text (RFC 2397's default type)
    assert plain.endswith("/output-0.txt") and (await client.get(path_of(plain))).content == b"a b"
    async with database.session() as session:
        rows = (await session.execute(select(StoredFile).order_by(StoredFile.created_at))).scalars().all()
    assert [(r.kind, r.prediction_id, r.expires_at is not None, r.size) for r in rows] == [
        ("output", None, True, len(body)),  # unlinked until link_outputs, like an upload
        ("output", None, True, 3),
    ]
    with pytest.raises(ValueError):
        await sink.keep("data:image/png;base64," + "A" * DECODE_CHARS + "!!!!", 1)
    with pytest.raises(ValueError):
        await sink.keep("not a data url", 1)
    async with database.session() as session:
        assert len((await session.execute(select(StoredFile))).scalars().all()) == 2  # nothing left behind
    assert sorted(p.name for p in (settings.data_dir / "files" / "outputs").iterdir()) == sorted(r.id for r in rows)
