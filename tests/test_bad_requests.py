"""Bad input on the run, file and stream endpoints: always a 4xx problem body, never a 500."""

from __future__ import annotations

import httpx
import pytest

BAD = [
    ("POST", "/v1/predictions", b"{"),
    ("POST", "/v1/predictions", b"[]"),
    ("POST", "/v1/predictions", b'{"version": 5, "input": {}}'),
    ("POST", "/v1/predictions", b'{"version": "x", "input": []}'),
    ("POST", "/v1/predictions", b'{"version": "a/b:c", "input": {}}'),
    ("POST", "/v1/predictions", b'{"version": "' + b"a" * 5000 + b'", "input": {}}'),
    ("POST", "/v1/predictions", b'{"version": "a/b", "input": {}, "webhook": "ftp://x"}'),
    ("POST", "/v1/predictions", b'{"version": "a/b", "input": {}, "webhook_events_filter": ["nope"]}'),
    ("POST", "/v1/predictions", b'{"version": "a/b/c", "input": {"\\u0000": 1}}'),
    ("POST", "/v1/models/a/b/predictions", b'{"input": 5}'),
    ("GET", "/v1/predictions?created_after=notadate", b""),
    ("GET", "/v1/predictions?cursor=%%%", b""),
    ("GET", "/v1/predictions/" + "z" * 300, b""),
    ("POST", "/v1/predictions/nope/cancel", b""),
    ("POST", "/v1/models/a/b/versions/c/trainings", b'{"destination": 3, "input": {}}'),
    ("GET", "/v1/trainings/x", b""),
    ("POST", "/v1/files", b"notmultipart"),
    ("GET", "/v1/streams/nope", b""),
    ("POST", "/v1/predictions", b'{"version": "a/b", "input": {}}'),
]
HEADERS = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("method", "path", "body"), BAD)
async def test_bad_requests_are_4xx_problems(client: httpx.AsyncClient, method: str, path: str, body: bytes) -> None:
    for headers in (HEADERS, {**HEADERS, "Prefer": "wait=x", "Cancel-After": "soon"}):
        response = await client.request(method, path, content=body, headers=headers)
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        assert response.json()["detail"]
