"""The one place where exceptions become HTTP answers in OpenAI's error shape.

``IntramurosError`` subclasses carry their own status, type, code and param;
request-validation failures become 400 naming the parameter; anything else
is a 500 with a generic message (details go to the log, never to the caller).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from intramuros.errors import (
    IntramurosError,
    InvalidJSON,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    error_body,
)

log = logging.getLogger(__name__)


def error_response(exc: IntramurosError) -> JSONResponse:
    """The JSON response for ``exc``, with its headers (e.g. Retry-After)."""
    return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers or None)


def answer_error(request: Request, exc: IntramurosError) -> JSONResponse:
    """Our error's answer to ``request`` (a server error is logged first)."""
    if isinstance(exc, ServerError):
        log.error("%s %s -> %s: %s", request.method, request.url.path, exc.status,
                  exc.message)  # fmt: skip
    return error_response(exc)


def param_of(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "content")`` -> ``"messages[0].content"``."""
    parts = [x for x in loc if x != "body"]
    out = ""
    previous: Any = None
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        elif _is_union_tag(str(part), previous):
            continue
        else:
            out += f".{part}"
        previous = part
    return out or None


# pydantic puts the union member it tried into the location ("str",
# "list[int]", "NamedToolChoice", or a discriminator value after a list
# index); those are not part of the parameter's path.
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}
_DISCRIMINATORS = {"system", "developer", "user", "assistant", "tool", "text", "image_url"}


def _is_union_tag(part: str, previous: Any) -> bool:
    if part in _TYPE_TAGS or "[" in part or "-" in part or part[:1].isupper():
        return True
    return isinstance(previous, int) and part in _DISCRIMINATORS


def validation_error(exc: RequestValidationError) -> IntramurosError:
    """Turn FastAPI's validation error into ours: the first problem, named."""
    errors = list(exc.errors())
    if not errors:
        return InvalidRequest("The request is invalid.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidJSON(
            "We could not parse the JSON body of your request: "
            f"{first.get('ctx', {}).get('error', 'invalid JSON')}."
        )
    if tuple(first.get("loc", ())) == ("body",):
        # No body at all ("missing") or a JSON value that is not an object.
        return InvalidRequest("The request body must be a JSON object.")
    param = param_of(tuple(first.get("loc", ())))
    kind = first.get("type")
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    else:
        message = f"Invalid value for '{param}': {first.get('msg')}."
    return InvalidRequest(message, param=param)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(IntramurosError)
    async def _ours(request: Request, exc: IntramurosError) -> JSONResponse:
        return answer_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err: IntramurosError
        if exc.status_code == 404:
            err = NotFound(f"Unknown route: {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = MethodNotAllowed(f"Method {request.method} not allowed on {request.url.path}")
        elif exc.status_code == 413:
            err = PayloadTooLarge(str(exc.detail))
        elif exc.status_code < 500:
            err = InvalidRequest(str(exc.detail))
        else:
            err = ServerError("Internal server error.")
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(ServerError("Internal server error."))
