"""Errors to HTTP, in one place: every error leaves as problem JSON (``title``, ``detail``, ``status``).

Every request gets an answer on a connection that stays open. Starlette's last-resort handler (for
``Exception``) answers and then raises the error again, for the server to log: uvicorn then logs a second
traceback and closes the kept-alive connection, and a request the client had already sent on it is
never answered. So unexpected errors are answered here, by :class:`Answered` (inside Starlette's), and
the database's and the disk's faults by handlers of their own (503 or 507, see :mod:`cogport.db.faults`):
nothing reaches Starlette's but an error of an outer middleware. Repeated failures log one line each per
minute (:func:`cogport.logs.failure`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogport import logs
from cogport.db import faults
from cogport.errors import CogportError

log = logging.getLogger(__name__)

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable entity",
    429: "Too many requests",
}


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"title": title, "detail": detail, "status": status, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def error_response(exc: CogportError) -> JSONResponse:
    if exc.status >= 500:
        logs.failure(log, f"{type(exc).__name__}: {exc.detail}", f"{exc.status} {type(exc).__name__}: {exc.detail}")
    return problem(exc.status, exc.instance_title, exc.detail, exc.headers(), **exc.extra())


async def _cogport_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CogportError)
    return error_response(exc)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    """A database or disk error: 503 (outage) or 507 (full), with one log line per distinct failure a
    minute; anything else from a driver is a bug (500)."""
    known = faults.fault(exc)
    if known is None:
        return await _unhandled(request, exc)
    return _fault_response(exc, known)


def _fault_response(exc: Exception, known: CogportError) -> JSONResponse:
    what = faults.describe(exc)
    logs.failure(log, what, f"{known.status} {known.instance_title}: {what}", level=logging.WARNING)
    return problem(known.status, known.instance_title, known.detail, known.headers())


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


_ERROR_TYPES = {
    "missing": "required",
    "extra_forbidden": "additional_property_not_allowed",
    "literal_error": "enum",
    "enum": "enum",
    "less_than_equal": "number_lte",
    "greater_than_equal": "number_gte",
}


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        reason = next(str(e.get("ctx", {}).get("error", "")) for e in errors if e.get("type") == "json_invalid")
        return problem(400, "Invalid JSON", f"The request body is not valid JSON: {reason}".rstrip(": "))
    fields = []
    for error in errors:
        field = _field_name(tuple(error.get("loc", ())))
        kind = _ERROR_TYPES.get(str(error.get("type")), str(error.get("type")))
        if error.get("type") == "missing":
            description = f"{field} is required"
        elif error.get("type") == "extra_forbidden":
            description = f"Additional property {field} is not allowed"
        else:
            description = str(error.get("msg"))
        fields.append({"type": kind, "field": field, "description": description})
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
    return problem(422, "Input validation failed", detail, invalid_fields=fields)


_NOT_FOUND = "The requested resource could not be found."


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405 and request.path_params:
        # The path matched only through parameters (``POST /v1/models/x/predictions`` is ``/v1/models/{owner}/
        # {name}`` with name "predictions"): it names no operation here, and maybe nothing at all, so it is a 404
        # as on Replicate, not a 405 listing the methods of an unrelated route. Fixed paths keep their 405.
        return problem(404, _TITLES[404], _NOT_FOUND)
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
    if exc.status_code == 404 and detail == "Not Found":
        detail = _NOT_FOUND
    elif exc.status_code == 400 and detail == "There was an error parsing the body":
        # FastAPI's words for a body it could not decode at all (not UTF-8, nested too deeply, ...).
        detail = "The request body could not be parsed; JSON bodies must be UTF-8 and reasonably nested"
    return problem(exc.status_code, _TITLES.get(exc.status_code, "Error"), detail, dict(exc.headers or {}))


async def _unhandled(_request: Request, exc: Exception) -> JSONResponse:
    known = faults.fault(exc)
    if known is not None:  # a driver's own error class (asyncpg's), or one wrapped in something else
        return _fault_response(exc, known)
    what = faults.describe(exc)
    logs.failure(log, what, f"unhandled error: {what}", exc=exc, traceback=True)
    return problem(500, "Internal server error", "An unexpected error occurred; it has been logged.")


class Answered:
    """Answers every request an error escaped from (500 problem JSON, or 503/507 for a fault), so that
    the connection stays open; an error after the response was sent is logged and the connection kept.
    Only an error in the middle of a response (its body cut short) still closes it: that is the one way
    HTTP/1.1 has to say a body is incomplete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = complete = False

        async def watch(message: Message) -> None:
            nonlocal started, complete
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if not started:
                response = await _unhandled(Request(scope), exc)
                await response(scope, receive, send)
            elif complete:
                what = faults.describe(exc)
                logs.failure(log, what, f"an error after the response was sent: {what}", exc=exc, traceback=True)
            else:
                raise


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]

HANDLERS: dict[type[Exception], Handler] = {
    CogportError: _cogport_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    SQLAlchemyError: _driver_error,
    OSError: _driver_error,
}
"""The app's exception handlers (Starlette's ExceptionMiddleware picks one by the error's class, nearest first)."""


async def handled(request: Request, exc: Exception) -> JSONResponse | None:
    """The answer the app's handlers give ``exc``, as Starlette's ExceptionMiddleware picks it; None for an
    error none of them takes (:class:`Answered` answers it). For code that answers outside the router
    (:mod:`cogport.api.direct_creates`)."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    return None


def install(app: FastAPI) -> None:
    """The handlers, and :class:`Answered` (install it before the other middleware: it sits inside them)."""
    for cls, handler in HANDLERS.items():
        app.add_exception_handler(cls, handler)
    app.add_exception_handler(Exception, _unhandled)  # Starlette's last resort: outer middlewares' errors
    app.add_middleware(Answered)
