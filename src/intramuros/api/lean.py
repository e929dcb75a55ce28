"""The lean dispatcher: well-formed requests to ``@lean`` routes, served directly.

It sits inside the body-limit middleware (the body is read, bounded and
checked already) and in front of FastAPI's exception layer and router. For a
POST to a lean route with a JSON body (up to ``MAX_LEAN_BODY``) that parses and
validates, it resolves
the route's dependencies (the API key), calls the endpoint function and sends
its response; errors the endpoint raises become the same answers the app's
handlers give (``intramuros.api.errors``). Everything else, including every
request whose body does not parse or validate, goes to FastAPI unchanged, so
that refusals are FastAPI's and ours exactly as on any other route.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intramuros.api.errors import answer_error
from intramuros.errors import IntramurosError
from intramuros.platform.lean import is_lean

# Bodies up to this size are parsed here (a chat request is a few kilobytes); larger ones
# go to FastAPI.
MAX_LEAN_BODY = 64 * 1024


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # "body", "request", "response" or "depends"
    dependency: Callable[[Request], Awaitable[Any]] | None = None


@dataclass(frozen=True)
class LeanRoute:
    """A lean route's endpoint and what to call it with."""

    path: str
    endpoint: Callable[..., Awaitable[Any]]
    body: type[BaseModel]
    params: tuple[_Param, ...]


def lean_route(route: APIRoute) -> LeanRoute:
    """The lean form of ``route``; ValueError if its endpoint takes what the dispatcher
    does not provide (a route is marked by hand: the mistake shows at start-up)."""
    endpoint = route.endpoint
    where = f"lean route POST {route.path} ({endpoint.__qualname__})"
    if route.methods != {"POST"} or "{" in route.path:
        raise ValueError(f"{where}: only POST routes without path parameters can be lean")
    if not inspect.iscoroutinefunction(endpoint):
        raise ValueError(f"{where}: the endpoint must be async")
    hints = get_type_hints(endpoint)
    params: list[_Param] = []
    body: type[BaseModel] | None = None
    for name, param in inspect.signature(endpoint).parameters.items():
        hint = hints.get(name)
        if isinstance(param.default, Depends) and param.default.dependency is not None:
            params.append(_Param(name, "depends", param.default.dependency))
        elif hint is Request:
            params.append(_Param(name, "request"))
        elif hint is Response:
            params.append(_Param(name, "response"))
        elif isinstance(hint, type) and issubclass(hint, BaseModel) and body is None:
            body = hint
            params.append(_Param(name, "body"))
        else:
            raise ValueError(f"{where}: parameter '{name}' cannot be provided")
    if body is None:
        raise ValueError(f"{where}: no JSON body model")
    return LeanRoute(route.path, endpoint, body, tuple(params))


def lean_routes(routers: list[APIRouter]) -> dict[str, LeanRoute]:
    """The ``@lean`` routes of ``routers`` by path (routers included without a prefix or
    dependencies of their own, as the app includes them)."""
    return {r.path: lean_route(r) for router in routers for r in router.routes
            if isinstance(r, APIRoute) and is_lean(r.endpoint)}  # fmt: skip


class LeanDispatch:
    """ASGI middleware serving well-formed requests to lean routes (see the module)."""

    def __init__(self, app: ASGIApp, routes: dict[str, LeanRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            route = self.routes.get(scope.get("path", ""))
            if route is not None:
                await self._serve(route, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, route: LeanRoute, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        # A large body gains little here and would be parsed twice if it is refused:
        # FastAPI takes it, as it takes every refused one.
        body = _parsed(route, scope, raw) if len(raw) <= MAX_LEAN_BODY else None
        if body is None:
            # FastAPI reads, refuses and words the error as on every other route.
            await self.app(scope, replay, send)
            return
        request = Request(scope, replay)
        kwargs: dict[str, Any] = {}
        try:
            for param in route.params:
                if param.kind == "body":
                    kwargs[param.name] = body
                elif param.kind == "request":
                    kwargs[param.name] = request
                elif param.kind == "response":
                    kwargs[param.name] = Response()
                else:
                    assert param.dependency is not None
                    kwargs[param.name] = await param.dependency(request)
            response = await route.endpoint(**kwargs)
        except IntramurosError as exc:
            response = answer_error(request, exc)
        if not isinstance(response, Response):
            raise TypeError(f"lean endpoint {route.path} returned {type(response).__name__}, "
                            "not a Response")  # fmt: skip
        await response(scope, replay, send)


def _parsed(route: LeanRoute, scope: Scope, raw: bytes) -> BaseModel | None:
    """The request's body as the route's model, or None (FastAPI answers it then)."""
    if not raw or not _json_content(scope):
        return None
    try:
        return route.body.model_validate(json.loads(raw))
    except (ValueError, ValidationError, RecursionError):
        return None


def _json_content(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            kind = bytes(value).split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or (kind.startswith(b"application/")
                                                    and kind.endswith(b"+json"))  # fmt: skip
    return False
