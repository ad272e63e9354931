"""The create routes answered directly (api/direct_creates.py) answer exactly as the FastAPI routes do.

Each request is sent twice, to the app and to the same app without :class:`DirectCreates` (its FastAPI
routes then answer every create), sharing one database and one set of resources; the two answers must be the
same: status, problem JSON, headers, and for a run made, the same run but for its id and times. Hypothesis
draws the requests: callers good and bad, content types, bodies (valid, invalid, not JSON), ``Prefer`` and
``Cancel-After``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, event, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from starlette.types import ASGIApp, Receive, Scope, Send

from cogport.api.direct_creates import DirectCreates
from cogport.db.engine import Database
from cogport.settings import RateLimitSettings, Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.accounts import Users
from tests.support.registry import add_version, auth, create_model

MASKED = "<masked>"


class Routed:
    """The app without :class:`DirectCreates`: every create answered by its FastAPI route."""

    def __init__(self, app: FastAPI) -> None:
        middleware = app.user_middleware
        app.user_middleware = [m for m in middleware if m.cls is not DirectCreates]  # type: ignore[comparison-overlap]
        try:
            self.stack = app.build_middleware_stack()
        finally:
            app.user_middleware = middleware
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app
        await self.stack(scope, receive, send)


def asgi_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@dataclass
class Pair:
    direct: httpx.AsyncClient
    routed: httpx.AsyncClient
    tokens: dict[str, str]
    version: str


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.rate_limit = RateLimitSettings(creates_per_minute=0, requests_per_minute=0)  # no limit here
    return settings


@pytest.fixture
async def pair(app: FastAPI, client: httpx.AsyncClient, database: Database, users: Users) -> AsyncIterator[Pair]:
    await create_model(client, users.alice, "alice/m", visibility="private")
    version = await add_version(database, "alice/m")
    deployment = {"name": "dep", "model": "alice/m", "version": version, "hardware": "cpu"}
    response = await client.post(
        "/v1/deployments", json={**deployment, "min_instances": 0, "max_instances": 1}, headers=auth(users.alice)
    )
    assert response.status_code == 200, response.text
    tokens = {"admin": ADMIN_TOKEN, "alice": users.alice, "bob": users.bob}
    async with asgi_client(app) as direct, asgi_client(Routed(app)) as routed:
        yield Pair(direct, routed, tokens, version)


def normal(response: httpx.Response) -> dict[str, Any]:
    """An answer, with what differs from run to run (a new run's id and times) masked."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    headers = {
        name: response.headers.get(name)
        for name in ("content-type", "retry-after", "cache-control", "preference-applied", "location")
    }
    if response.status_code in (201, 202):
        body = {
            k: MASKED if k in ("id", "urls") or k.endswith("_at") or k == "deadline" else v for k, v in body.items()
        }
        headers["location"] = MASKED
    return {"status": response.status_code, "headers": headers, "body": body}


async def both(pair: Pair, path: str, content: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], ...]:
    direct = await pair.direct.post(path, content=content, headers=headers)
    routed = await pair.routed.post(path, content=content, headers=headers)
    return normal(direct), normal(routed)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
VERSION = "<the version>"


def usually(value: Any, *others: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value`` about two times in three, else one of ``others``."""
    return st.sampled_from([True, True, False]).flatmap(lambda usual: st.just(value) if usual else st.one_of(*others))


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "version": usually(VERSION, st.sampled_from(["alice/m", f"alice/m:{VERSION}", "nope", "", "x" * 301]), json_values),
    "input": usually(
        {"text": "hi"},
        st.dictionaries(st.sampled_from(["text", "other"]) | st.text(max_size=3), json_values, max_size=3),
        json_values,
    ),
    "webhook": st.sampled_from(["http://127.0.0.1:9/hook", "ftp://127.0.0.1/x", "", "not a url"]) | json_values,
    "webhook_completed": st.sampled_from(["http://127.0.0.1:9/done", "nope"]) | st.none(),
    "webhook_events_filter": st.lists(st.sampled_from(["start", "output", "logs", "completed", "bogus"]), max_size=3)
    | json_values,
    "stream": st.booleans() | json_values,
    "extra": json_values,
}
REQUIRED = ("version", "input")
runs = st.fixed_dictionaries(
    {k: FIELDS[k] for k in REQUIRED}, optional={k: v for k, v in FIELDS.items() if k not in REQUIRED}
)
bodies = usually(
    {"version": VERSION, "input": {"text": "hi"}},
    runs,
    runs.map(lambda body: {k: v for k, v in body.items() if k != "version"}),  # the model route's shape
    st.fixed_dictionaries({}, optional=FIELDS),
    json_values,
).map(lambda body: json.dumps(body).encode()) | st.one_of(
    st.binary(max_size=24),
    st.sampled_from(
        [b"", b"{", b"null", b"[]", b'{"version": "\\ud800", "input": {}}', b"\xff\xfe{}", "{}".encode("utf-16")]
    ),
)
requests = st.fixed_dictionaries(
    {
        "path": usually(
            "/v1/predictions",
            st.sampled_from(
                [
                    "/v1/models/alice/m/predictions",
                    "/v1/models/alice/nothing/predictions",
                    "/v1/models/acme/m/predictions",
                    "/v1/deployments/alice/dep/predictions",
                    "/v1/deployments/alice/nope/predictions",
                    "/v1/deployments/bob/dep/predictions",
                ]
            ),
        ),
        "caller": usually("alice", st.sampled_from(["bob", "admin", None])),
        "authorization": usually(
            "Bearer {token}",
            st.sampled_from(
                ["Token {token}", "bearer  {token} ", "Bearer", "Bearer  ", "Basic {token}", "Bearer r8_x"]
            ),
        ),
        "content_type": usually(
            "application/json",
            st.sampled_from(
                [
                    None,
                    "application/json; charset=utf-8",
                    "APPLICATION/JSON",
                    "text/plain",
                    "application/merge-patch+json",
                    "application/x-www-form-urlencoded",
                ]
            ),
        ),
        "body": bodies,
        # a valid wait is left out: a run made would be waited for (the version has no model to run)
        "prefer": usually(None, st.sampled_from(["", "respond-async", "wait=0", "wait=x", "waiting", "foo, wait=61x"])),
        "cancel_after": usually(None, st.sampled_from(["", "30s", "1h5m", "bogus", "-5", "1e999"])),
        "drop_version": usually(True, st.just(False)),
    }
)


@examples(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(request=requests)
async def test_every_create_is_answered_as_the_fastapi_route_answers_it(pair: Pair, request: dict[str, Any]) -> None:
    headers: dict[str, str] = {}
    if request["caller"] is not None:
        headers["Authorization"] = request["authorization"].format(token=pair.tokens[request["caller"]])
    for name, key in (("Content-Type", "content_type"), ("Prefer", "prefer"), ("Cancel-After", "cancel_after")):
        if request[key] is not None:
            headers[name] = request[key]
    content = request["body"].replace(VERSION.encode(), pair.version.encode())
    if request["path"] != "/v1/predictions" and request["drop_version"] and content.startswith(b'{"'):
        run = json.loads(content)  # the shape of a model's or deployment's create
        run.pop("version", None)
        content = json.dumps(run).encode()
    direct, routed = await both(pair, request["path"], content, headers)
    title = direct["body"].get("title", "") if isinstance(direct["body"], dict) else ""
    event(f"{request['path'].split('/')[2]}: {direct['status']} {title}")
    assert direct == routed


async def test_the_usual_requests_are_answered_directly_and_the_rest_by_the_routes(app: FastAPI, pair: Pair) -> None:
    """What the property above compares is the direct path: the usual requests never reach the router."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, DirectCreates):
        layer = layer.app
    inner = layer.app
    seen: list[str] = []

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await inner(scope, receive, send)

    layer.app = routed
    try:
        usual = {**auth(pair.tokens["alice"]), "Content-Type": "application/json"}
        body = json.dumps({"version": pair.version, "input": {"text": "hi"}}).encode()
        for path, content in (
            ("/v1/predictions", body),
            ("/v1/models/alice/m/predictions", b'{"input": {}}'),
            ("/v1/deployments/alice/dep/predictions", b'{"input": {}}'),
        ):
            response = await pair.direct.post(path, content=content, headers=usual)
            assert response.status_code == 201, response.text
            bad_token = {**usual, "Authorization": "Bearer"}
            assert (await pair.direct.post(path, content=b"{}", headers=bad_token)).status_code == 401
        assert seen == []
        for path, content, headers in (
            ("/v1/predictions", b"{", usual),  # not JSON
            ("/v1/predictions", b'{"input": {}}', usual),  # invalid
            ("/v1/predictions", body, {**usual, "Content-Type": "application/json; charset=utf-8"}),
            ("/v1/predictions", body, {"Content-Type": "application/json"}),  # no token
            ("/v1/models/alice/m/predictions/", body, usual),  # not the route's path
        ):
            await pair.direct.post(path, content=content, headers=headers)
        assert len(seen) == 5
    finally:
        layer.app = inner


async def test_runs_made_either_way_are_the_same_runs(pair: Pair) -> None:
    headers = {**auth(pair.tokens["alice"]), "Content-Type": "application/json"}
    run = {"input": {"text": "hi"}, "webhook": "http://127.0.0.1:9/x"}
    for path, fields in (
        ("/v1/predictions", {"version": pair.version}),
        ("/v1/models/alice/m/predictions", {}),
        ("/v1/deployments/alice/dep/predictions", {}),
    ):
        body = json.dumps({**run, **fields}).encode()
        for extra in ({}, {"Cancel-After": "5m"}, {"Prefer": "respond-async"}):
            direct, routed = await both(pair, path, body, {**headers, **extra})
            assert direct == routed
            assert direct["status"] == 201


@pytest.mark.parametrize("limited", ["direct", "routed"])
async def test_rate_limits_count_a_create_once_either_way(
    app: FastAPI, settings: Settings, pair: Pair, limited: str
) -> None:
    """An invalid body the direct path hands to the route is counted once; the 429s are the same."""
    settings.rate_limit.creates_per_minute = 2
    app.state.rate_limiter.clock = lambda: 1_800_000_015.0
    headers = {**auth(pair.tokens["bob"]), "Content-Type": "application/json"}
    for _ in range(2):
        response = await pair.direct.post("/v1/predictions", content=b'{"input": {}}', headers=headers)
        assert response.status_code == 422, response.text
    first = getattr(pair, limited)
    answers = [
        normal(await c.post("/v1/predictions", content=b'{"version": "x", "input": {}}', headers=headers))
        for c in (first, pair.routed if first is pair.direct else pair.direct)
    ]
    assert answers[0]["status"] == 429 and answers[0]["headers"]["retry-after"] == "45"
    assert answers[0] == answers[1]


async def test_the_access_log_line_is_the_same(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    headers = {**auth(pair.tokens["alice"]), "Content-Type": "application/json"}
    body = json.dumps({"version": pair.version, "input": {"text": "hi"}}).encode()
    lines = []
    for c in (pair.direct, pair.routed):
        for path, content in (
            ("/v1/predictions", body),
            ("/v1/models/alice/m/predictions", b'{"input": {"text": "hi"}}'),
            ("/v1/deployments/alice/dep/predictions", b'{"input": {"text": "hi"}}'),
            ("/v1/predictions", b'{"version": "nope", "input": {}}'),
        ):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="cogport.access"):
                await c.post(path, content=content, headers=headers)
            (record,) = [r for r in caplog.records if r.name == "cogport.access"]
            access = dict(record.access)  # type: ignore[attr-defined]
            del access["duration_ms"]
            lines.append(access)
    assert lines[:4] == lines[4:]
    assert [line["route"] for line in lines[:4]] == [
        "/v1/predictions",
        "/v1/models/{owner}/{name}/predictions",
        "/v1/deployments/{owner}/{name}/predictions",
        "/v1/predictions",
    ]
    assert {line["account"] for line in lines} == {"alice"}


def test_no_other_route_takes_a_post_on_the_direct_paths(app: FastAPI) -> None:
    """FastAPI answers a request with the first route that matches its path and method: the direct paths'
    own routes must be the only ones that could (a route added later that takes these paths would not be
    reached; this says so)."""

    def routes(candidates: list[Any]) -> list[APIRoute]:
        found: list[APIRoute] = []
        for route in candidates:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                found += routes(inner.routes)
            elif isinstance(route, APIRoute) and "POST" in (route.methods or ()):
                found.append(route)
        return found

    direct = DirectCreates(app)
    taken = [direct.exact["/v1/predictions"], *direct.patterns.values()]
    posts = routes(app.router.routes)
    for sample in ("/v1/predictions", "/v1/models/a/b/predictions", "/v1/deployments/a/b/predictions"):
        matching = [route for route in posts if route.path_regex.match(sample)]
        assert len(matching) == 1 and any(matching[0] is d.route for d in taken), (sample, matching)
