"""The create routes' hot path, answered without FastAPI's routing, dependency solving and response machinery.

``POST /v1/predictions`` and ``POST /v1/models/{owner}/{name}/predictions`` are most of a busy server's
requests, and FastAPI spent more CPU on each (route matching, a dependency solve, parameter groups, the
endpoint's wrappers) than cogport's own handling of it. :class:`DirectCreates` sits inside the app's
middleware (so the access log, the body cap, the NUL guard and :class:`~cogport.api.problems.Answered` see
these requests as any other) and answers them with the routes' own parts: the caller from
:func:`~cogport.api.deps.get_call` (token, principal cache, rate limit, the username for the access log),
the body model, the same resolvers and :func:`~cogport.api.routes.predictions.create_run`, errors through
the app's own handlers (:func:`~cogport.api.problems.handled`).

It takes a request only in the shape clients send it: a ``Content-Type: application/json`` body that is
valid JSON and a valid body, with an ``Authorization`` header. Everything else goes on to the FastAPI
routes, which stay declared (the OpenAPI document) and answer it as before, its body replayed: bad JSON,
another content type, a body that fails validation (after the caller is admitted: the rate limit counts a
request once, and FastAPI too solves the caller before it reports the body), a session cookie.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogport.api.deps import Call, get_call
from cogport.api.problems import handled
from cogport.api.routes import predictions
from cogport.lifecycle.runs import Resolver
from cogport.schemas.actions import PredictionCreate, RunCreate

__all__ = ["DirectCreates"]

ResolverFor = Callable[[Call, Any, dict[str, str]], Resolver]
"""The version a create runs, from the caller, the validated body and the path's parameters."""


@dataclass(frozen=True, slots=True)
class Direct:
    """A create route answered directly: its FastAPI route (the access log's and rate limit's template), its
    body model, the resolver of its version."""

    route: APIRoute
    body: type[RunCreate]
    resolver: ResolverFor


def _by_version(call: Call, body: PredictionCreate, _params: dict[str, str]) -> Resolver:
    return predictions.version_resolver(call, body.version)


def _by_model(call: Call, _body: RunCreate, params: dict[str, str]) -> Resolver:
    return predictions.model_resolver(call, params["owner"], params["name"])


def _route(endpoint: Callable[..., Any]) -> APIRoute:
    for route in predictions.router.routes:
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
        self.exact = {"/v1/predictions": Direct(_route(predictions.create_prediction), PredictionCreate, _by_version)}
        model = _route(predictions.create_model_prediction)
        self.patterns = [Direct(model, RunCreate, _by_model)]
        """Matched with the route's own pattern. The predictions router is the app's first, and no route
        before these takes a POST, so FastAPI would pick these too (tests/test_direct_creates.py)."""

    def _match(self, scope: Scope) -> tuple[Direct, dict[str, str]] | None:
        path: str = scope["path"]
        direct = self.exact.get(path)
        if direct is not None:
            return direct, {}
        if path.startswith("/v1/models/"):
            for direct in self.patterns:
                found = direct.route.path_regex.match(path)
                if found is not None:
                    return direct, found.groupdict()
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
            response = await predictions.create_run(
                call,
                run,
                direct.resolver(call, run, params),
                headers.get("prefer"),
                headers.get("cancel-after"),
            )
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
