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


# Paths that match a route only through its parameters, with a method it lacks: Replicate answers 404 (issue 18:
# POST /v1/models/justname/predictions was a 405 carrying the methods of GET /v1/models/{owner}/{name}).
NOWHERE = [
    ("POST", "/v1/models/justname/predictions"),
    ("PUT", "/v1/models/justname/predictions"),
    ("POST", "/v1/models/justname/versions"),
    ("POST", "/v1/deployments/justname/predictions"),
    ("GET", "/v1/models/a/b/predictions"),
    ("DELETE", "/v1/predictions/nope/cancel"),
    ("GET", "/v1/trainings/nope/cancel"),
    ("POST", "/v1/nothing"),
]


@pytest.mark.parametrize(("method", "path"), NOWHERE)
async def test_a_method_on_a_path_matched_only_through_parameters_is_a_404(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"input": {}})
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json() == {
        "title": "Not found",
        "detail": "The requested resource could not be found.",
        "status": 404,
    }
    assert "allow" not in response.headers


async def test_a_fixed_path_keeps_its_405(client: httpx.AsyncClient) -> None:
    for method, path in (("PUT", "/v1/predictions"), ("DELETE", "/v1/models"), ("POST", "/v1/hardware")):
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.json()["title"] == "Method not allowed"
