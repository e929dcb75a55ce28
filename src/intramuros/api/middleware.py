"""ASGI middleware: the request-body limit, and text that is not Unicode.

The body is read whole (up to the limit) before the app sees it: a body over
the limit, declared or chunked, gets 413 and is never parsed. JSON escapes of
lone UTF-16 surrogates (``"\\ud800"``) decode to strings no encoder accepts;
they are refused here with 400 rather than failing deep inside an engine.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intramuros.api.errors import error_body
from intramuros.errors import IntramurosError, InvalidRequest, PayloadTooLarge

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BodyLimitMiddleware:
    """Answer 413 to bodies over the limit, 400 to JSON with lone surrogates.

    ``limit`` applies to every path except those under a prefix in
    ``path_limits`` (uploads: files, audio), which have their own.
    """

    def __init__(self, app: ASGIApp, limit: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_limit = limit
        # Longest prefix first, so /v1/files/x does not fall under /v1.
        self.path_limits = sorted((path_limits or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        """The body limit of a request path."""
        for prefix, limit in self.path_limits:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _refuse(send, _too_large(limit))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        bad = _bad_unicode(body)
        if bad is not None:
            await _refuse(send, bad)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)



def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")


def _bad_unicode(body: bytes) -> InvalidRequest | None:
    """An error if the JSON body holds a string that is not valid Unicode."""
    if not _SURROGATE_ESCAPE.search(body):
        return None  # the common case costs one regex scan
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # not JSON: the app reports that itself
    path = _first_bad_string(doc, "")
    if path is None:
        return None
    return InvalidRequest(
        "The request contains a string that is not valid Unicode (an unpaired surrogate).",
        param=path or None,
    )


def _first_bad_string(node: Any, path: str) -> str | None:
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(item, dict):
            for key, value in item.items():
                stack.append((key, where))
                stack.append((value, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((value, f"{where}[{i}]") for i, value in enumerate(item))
    return None


async def _refuse(send: Send, exc: IntramurosError) -> None:
    body = json.dumps(error_body(exc)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
