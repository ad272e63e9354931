"""Fuzzing ``GET /metrics`` (outside ``/v1``, so the OpenAPI fuzzing in test_fuzz_openapi.py never reaches it):
hostile requests against a live server, over httpx and over a raw socket for what httpx refuses to send
(NUL, bytes that are not UTF-8, very long headers). The bar: never a server error (5xx); refusals of the
caller are 401 or 403 problem JSON; the admin and the scrape token get text Prometheus can parse."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer

SCRAPE_TOKEN = "scrape-token-0123456789abcdef"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.metrics.token = SCRAPE_TOKEN
    return settings


@pytest.fixture
def server(live_server: LiveServer) -> LiveServer:
    return live_server


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(server: LiveServer, head: bytes, body: bytes = b"") -> Answer:
    """Send ``head`` (request line and header lines, without the blank line) as is, read the whole answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    header_block, _, content = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, content)


def assert_answer(status: int, content_type: str, body: bytes, head: bool = False) -> None:
    """No server error; a refusal of the caller is problem JSON; a 200 is Prometheus text."""
    assert status < 500, body[:300]
    if status in (401, 403):
        assert content_type.startswith("application/problem+json")
        if not head:
            assert json.loads(body)["status"] == status
    elif status == 200 and not head:
        assert content_type.startswith("text/plain")
        assert list(text_string_to_metric_families(body.decode()))


def check(response: httpx.Response) -> None:
    assert_answer(
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
        response.request.method == "HEAD",
    )


def test_tokens_and_schemes(server: LiveServer) -> None:
    url = f"{server.url}/metrics"
    refused = {
        None: 401,
        "": 401,
        "Bearer": 401,
        "bearer not-a-token": 401,
        "Token not-a-token": 401,
        f"Basic {ADMIN_TOKEN}": 401,
        f"Digest {ADMIN_TOKEN}": 401,
        ADMIN_TOKEN: 401,  # no scheme at all
        f"Bearer {ADMIN_TOKEN}x": 401,
        f"Bearer {ADMIN_TOKEN[:-1]}": 401,
        f"Bearer {SCRAPE_TOKEN}x": 401,
        f"Bearer {'x' * 20_000}": 401,
    }
    for authorization, status in refused.items():
        headers = {} if authorization is None else {"Authorization": authorization}
        response = httpx.get(url, headers=headers)
        assert response.status_code == status, (authorization, response.text)
        check(response)
    for token in (ADMIN_TOKEN, SCRAPE_TOKEN):
        for authorization in (f"Bearer {token}", f"bearer {token}", f"Token {token}", f"Bearer   {token}"):
            response = httpx.get(url, headers={"Authorization": authorization})
            assert response.status_code == 200, (authorization, response.text)
            check(response)


def test_methods_queries_and_accept(server: LiveServer) -> None:
    url = f"{server.url}/metrics"
    good = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for headers in ({}, good):
            response = httpx.request(method, url, headers=headers, content=b"x=1")
            assert response.status_code == 405, (method, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "GET" in response.headers["allow"]
    head = httpx.head(url, headers=good)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/plain")
    assert httpx.head(url).status_code == 401
    options = httpx.options(url)
    assert options.status_code == 405
    accepts = ("application/json", "application/openmetrics-text; version=1.0.0", "*/*", "text/html", "", ";q=x,")
    for accept in accepts:
        check(httpx.get(url, headers={**good, "Accept": accept}))
    for query in ("name[]=x", "a=1&a=2", "%ff%fe", "x=" + "y" * 8000, "=&&=", "name=cogport_queue_depth"):
        response = httpx.get(f"{url}?{query}", headers=good)
        assert response.status_code == 200, (query, response.text)
        check(response)
        check(httpx.get(f"{url}?{query}"))
    nul = httpx.get(f"{url}?a=%00", headers=good)  # refused app-wide (PostgreSQL text cannot hold NUL)
    assert nul.status_code == 400 and nul.headers["content-type"].startswith("application/problem+json")
    for path in ("/metrics/", "/metrics%00", "/Metrics", "//metrics"):
        check(httpx.get(f"{server.url}{path}", headers=good))


def test_bytes_httpx_will_not_send(server: LiveServer) -> None:
    heads = [
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer  \t ",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\xa9-not-ascii",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x00",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x00b",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode() + b"\x00",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: \xc3\xa9 token",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 60_000,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 200_000,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: \x00\xff",
        b"GET /metrics?\x00=\x00 HTTP/1.1\r\nHost: x",
        b"GET /metrics?%00=%00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SCRAPE_TOKEN.encode(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b",
        b"GET /metrics HTTP/1.0",
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\x02",
        b"BREW /metrics HTTP/1.1\r\nHost: x",
    ]
    for head in heads:
        answer = raw_request(server, head)
        assert_answer(answer.status, answer.headers.get("content-type", ""), answer.body, head.startswith(b"HEAD"))
        assert answer.status in (400, 401, 405, 413, 431), (head[:80], answer)
    # the same token, sent twice: whichever the server reads, it is the scrape token
    doubled = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SCRAPE_TOKEN.encode()
    answer = raw_request(server, doubled + b"\r\nAuthorization: Bearer " + SCRAPE_TOKEN.encode())
    assert answer.status == 200
    assert_answer(answer.status, answer.headers["content-type"], answer.body)


header_names = st.sampled_from(["Authorization", "Accept", "Accept-Encoding", "X-Forwarded-For", "Prefer", "Cookie"])
# what httpx sends: printable ASCII, no whitespace at either end (the raw-socket tests send the rest)
text_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(str.strip)
schemes = st.sampled_from(["Bearer ", "bearer ", "Token ", "Basic ", "", " ", "Bearer\t"])
authorizations = st.one_of(
    st.builds(lambda scheme, token: (scheme + token).strip(), schemes, text_values),
    st.builds(lambda scheme, token: (scheme + token).strip(), schemes, st.sampled_from([ADMIN_TOKEN, SCRAPE_TOKEN])),
)
queries = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=5)  # NUL included


@FUZZ
@given(
    authorization=st.none() | authorizations,
    extra=st.dictionaries(header_names, text_values, max_size=3),
    query=queries,
    method=st.sampled_from(["GET", "GET", "HEAD", "POST"]),
)
def test_random_headers_and_queries(
    server: LiveServer, authorization: str | None, extra: dict[str, str], query: list[tuple[str, str]], method: str
) -> None:
    headers = dict(extra)
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx.request(method, f"{server.url}/metrics", headers=headers, params=query, timeout=30)
    check(response)
    token = bearer(headers.get("Authorization"))
    if any("\x00" in key + value for key, value in query):
        assert response.status_code == 400  # refused before routing (api/body_limits.py), whatever the method
    elif method == "POST":
        assert response.status_code == 405
    elif token in (ADMIN_TOKEN, SCRAPE_TOKEN):
        assert response.status_code == 200
    else:
        assert response.status_code in (401, 403)


@FUZZ
@given(value=st.binary(max_size=400).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_random_header_bytes(server: LiveServer, value: bytes) -> None:
    for name in (b"Authorization: ", b"Authorization: Bearer ", b"Accept: ", b"X-Anything: "):
        answer = raw_request(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + name + value)
        assert_answer(answer.status, answer.headers.get("content-type", ""), answer.body)


def bearer(authorization: str | None) -> str | None:
    """The token a well-behaved server reads from ``authorization``: the test's own model of the rule."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "token") else None


async def test_nul_and_control_bytes_that_reach_the_app(app: FastAPI) -> None:
    """uvicorn refuses NUL in a header (400, above); another server in front might not, so in process too."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for authorization in ("Bearer a\x00b", f"Bearer {ADMIN_TOKEN}\x00", "Bearer \x00", "\x00 x", "Bearer \x7f\x01"):
            response = await client.get("/metrics", headers={"Authorization": authorization})
            assert response.status_code == 401, (authorization, response.text)
            check(response)
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}", "Accept": "\x00"})
        check(response)
        assert response.status_code == 200
