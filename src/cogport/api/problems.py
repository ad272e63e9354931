"""Errors to HTTP, in one place: every error leaves as problem JSON (``title``, ``detail``, ``status``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


async def _cogport_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CogportError)
    if exc.status >= 500:
        log.error("%s: %s", type(exc).__name__, exc.detail)
    return problem(exc.status, exc.instance_title, exc.detail, exc.headers(), **exc.extra())


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
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "Internal server error", "An unexpected error occurred; it has been logged.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(CogportError, _cogport_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
