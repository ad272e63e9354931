"""The create routes' hot path, answered without FastAPI's routing, dependency solving and response machinery.

``POST /v1/predictions``, ``POST /v1/models/{owner}/{name}/predictions`` and ``POST
/v1/deployments/{owner}/{name}/predictions`` are most of a busy server's requests, and FastAPI spent more CPU
on each (route matching, a dependency solve, parameter groups, the endpoint's wrappers: ~110 us) than
cogport's own handling of it. :class:`DirectCreates` sits inside the app's middleware (so the access log,
the body cap, the NUL guard and :class:`~cogport.api.problems.Answered` see these requests as any other)
and answers them with the routes' own parts: the caller from :func:`~cogport.api.deps.get_call` (token,
principal cache, rate limit, the username for the access log), the body model, the routes' own functions
(:func:`~cogport.api.routes.predictions.create_run` and its resolvers,
:func:`~cogport.api.routes.deployments.create_deployment_run`), errors through the app's own handlers
(:func:`~cogport.api.problems.handled`).

It takes a request only in the shape clients send it: a ``Content-Type: application/json`` body that is
valid JSON and a valid body, with an ``Authorization`` header. Everything else goes on to the FastAPI
routes, which stay declared (the OpenAPI document) and answer it as before, its body replayed: bad JSON,
another content type, a body that fails validation (after the caller is admitted: the rate limit counts a
request once, and FastAPI too solves the caller before it reports the body), a session cookie.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogport.api.deps import Call, get_call
from cogport.api.problems import handled
from cogport.api.routes import deployments, predictions
from cogport.schemas.actions import PredictionCreate, RunCreate

__all__ = ["DirectCreates"]

Create = Callable[[Call, Any, dict[str, str], str | None, str | None], Awaitable[JSONResponse]]
"""A route's answer from the caller, the validated body, the path's parameters, ``Prefer`` and ``Cancel-After``."""


@dataclass(frozen=True, slots=True)
class Direct:
    """A create route answered directly: its FastAPI route (the access log's and rate limit's template), its
    body model, and what it does with them (the route's own code)."""

    route: APIRoute
    body: type[RunCreate]
    create: Create


async def _by_version(
    call: Call, body: PredictionCreate, _params: dict[str, str], prefer: str | None, cancel_after: str | None
) -> JSONResponse:
    return await predictions.create_run(
        call, body, predictions.version_resolver(call, body.version), prefer, cancel_after
    )


async def _by_model(
    call: Call, body: RunCreate, params: dict[str, str], prefer: str | None, cancel_after: str | None
) -> JSONResponse:
    resolve = predictions.model_resolver(call, params["owner"], params["name"])
    return await predictions.create_run(call, body, resolve, prefer, cancel_after)


async def _by_deployment(
    call: Call, body: RunCreate, params: dict[str, str], prefer: str | None, cancel_after: str | None
) -> JSONResponse:
    return await deployments.create_deployment_run(call, params["owner"], params["name"], body, prefer, cancel_after)


def _route(router: APIRouter, endpoint: Callable[..., Any]) -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return route
    raise LookupError(f"no route for {endpoint.__name__}")


class Replay:
    """``receive`` for the FastAPI route after this middleware read the body: the messages read, then
    whatever reading them raised, then the server's own ``receive``."""

    def __init__(self, messages: list[Message], error: Exception | None, receive: Receive) -> None:
        self.messages = messages
        self.error = error
        self.receive = receive

    async def __call__(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await self.receive()


class DirectCreates:
    """ASGI middleware (the innermost): the create routes' requests in the usual shape, answered here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        by_version = Direct(_route(predictions.router, predictions.create_prediction), PredictionCreate, _by_version)
        self.exact = {"/v1/predictions": by_version}
        self.patterns = {
            "/v1/models/": Direct(
                _route(predictions.router, predictions.create_model_prediction), RunCreate, _by_model
            ),
            "/v1/deployments/": Direct(
                _route(deployments.router, deployments.create_deployment_prediction), RunCreate, _by_deployment
            ),
        }
        """By prefix, matched with the route's own pattern. No other route of the app takes a POST on these
        paths, so FastAPI picks these routes too (tests/test_direct_creates.py)."""

    def _match(self, scope: Scope) -> tuple[Direct, dict[str, str]] | None:
        path: str = scope["path"]
        direct = self.exact.get(path)
        if direct is not None:
            return direct, {}
        for prefix, direct in self.patterns.items():
            if path.startswith(prefix):
                found = direct.route.path_regex.match(path)
                return (direct, found.groupdict()) if found is not None else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            matched = self._match(scope)
        if matched is None or not _usual_headers(scope):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        try:
            body = await _read_body(receive, messages)
        except Exception as exc:  # the body cap's error, say: FastAPI's answer to it is the route's
            await self.app(scope, Replay(messages, exc, receive), send)
            return
        try:
            data = json.loads(body) if body is not None else None
        except Exception:  # not JSON: FastAPI says how (400)
            data = None
        if data is None:
            await self.app(scope, Replay(messages, None, receive), send)
            return
        direct, params = matched
        scope["route"] = direct.route  # the route template, for the access log and the rate limit
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            call = await get_call(request)
        except Exception as exc:
            await _answer_error(request, exc, scope, receive, send)
            return
        try:
            run = direct.body.model_validate(data)
        except ValidationError:  # FastAPI's 422 (the caller is admitted and counted once already)
            await self.app(scope, Replay(messages, None, receive), send)
            return
        headers = request.headers
        try:
            response = await direct.create(call, run, params, headers.get("prefer"), headers.get("cancel-after"))
        except Exception as exc:
            await _answer_error(request, exc, scope, receive, send)
            return
        await response(scope, receive, send)


def _usual_headers(scope: Scope) -> bool:
    """A JSON body (as FastAPI reads one: ``Content-Type`` its first such header) and a token."""
    content_type = token = None
    for name, value in scope["headers"]:
        if name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"authorization" and token is None:
            token = value
    return content_type == b"application/json" and token is not None


async def _read_body(receive: Receive, messages: list[Message]) -> bytes | None:
    """The request's body; None if the client went away first. Every message read is kept in ``messages``."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer_error(request: Request, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``exc`` as the app's exception handlers do; an error none takes goes on up (to Answered)."""
    response = await handled(request, exc)
    if response is None:
        raise exc
    await response(scope, receive, send)
