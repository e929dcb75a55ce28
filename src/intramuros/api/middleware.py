"""ASGI middleware: the request-body limit, the size of JSON, and text that is not Unicode.

The body is read whole (up to the limit) before the app sees it: a body over
the limit, declared or chunked, gets 413 and is never parsed. A JSON body
with more values than ``max_json_values`` gets 413 too, before it is parsed:
parsing and validating JSON hold the interpreter (threads do not help), and
eight megabytes of ``[[],[],...]`` take most of a second to parse. JSON
escapes of lone UTF-16 surrogates (``"\\ud800"``) decode to strings no
encoder accepts; they are refused here with 400 rather than failing deep
inside an engine.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intramuros.errors import IntramurosError, InvalidRequest, PayloadTooLarge, error_body

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BodyLimitMiddleware:
    """Answer 413 to bodies over the limit, 400 to JSON with lone surrogates.

    ``limit`` applies to every path except those under a prefix in
    ``path_limits`` (uploads: files, audio), which have their own.
    """

    def __init__(self, app: ASGIApp, limit: int, path_limits: dict[str, int] | None = None,
                 max_json_values: int = 32_768) -> None:  # fmt: skip
        self.app = app
        self.default_limit = limit
        self.max_json_values = max_json_values
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
        if _is_json(scope):
            body = b"".join(chunks)
            bad = await self._check_json(body)
            if bad is not None:
                await _refuse(send, bad)
                return
            chunks = [body]
        # Other bodies (uploads) are handed on in the pieces they came in: a multipart
        # parser reads them as a stream, and joining them would copy the whole upload.
        chunks.reverse()

        async def replay() -> Message:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": bool(chunks)}
            return await receive()

        await self.app(scope, replay, send)


    async def _check_json(self, body: bytes) -> IntramurosError | None:
        """Too many values, or a lone surrogate: the error; else None.

        The byte counts are a bound (commas inside strings count too); only a
        body over it is counted exactly, by a loop that lets the event loop run
        between its steps. A large body (an inline document) is scanned in a
        thread, a slice at a time, for the same reason.
        """
        if len(body) > _SLICE:
            scan = await asyncio.to_thread(_scan, body)
        else:
            scan = _scan(body)
        bound, surrogate = scan
        if bound > self.max_json_values:
            values = await asyncio.to_thread(_count_values, body)
            if values > self.max_json_values:
                return PayloadTooLarge(
                    f"The request body holds {values} JSON values (objects, arrays and their "
                    f"items); the limit is {self.max_json_values} (setting max_json_values).")
        if not surrogate:
            return None  # the common case
        return await asyncio.to_thread(_bad_unicode, body)


# Scans hold the interpreter for their whole length: a slice at a time lets others run.
_SLICE = 1 << 20


def _scan(body: bytes) -> tuple[int, bool]:
    """(an upper bound of the values in the JSON, whether it may escape a lone surrogate)."""
    bound, surrogate = 0, False
    for start in range(0, len(body), _SLICE):
        end = start + _SLICE
        bound += body.count(b",", start, end) + body.count(b"[", start, end) + body.count(
            b"{", start, end)
        # An escape cut by the slice's end is found by the next slice's overlap.
        surrogate = surrogate or _SURROGATE_ESCAPE.search(body, max(0, start - 5),
                                                          end) is not None  # fmt: skip
    return bound, surrogate


# Bytes that matter to counting values: quotes and escapes (to skip strings), openers, commas.
_STRUCTURE = re.compile(rb'[\\"{\[,]')


def _count_values(body: bytes) -> int:
    """Openers and commas outside strings: about the number of values in the JSON."""
    count, in_string, skip = 0, False, -1
    for match in _STRUCTURE.finditer(body):
        i = match.start()
        if i < skip:
            continue
        c = body[i]
        if in_string:
            if c == 0x5C:  # a backslash escapes the next byte (an escaped quote stays in)
                skip = i + 2
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        else:
            count += 1
    return count


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return b"json" in value.lower()
    # FastAPI parses a body without a content type as JSON too.
    return True


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")


def _bad_unicode(body: bytes) -> InvalidRequest | None:
    """An error if the JSON body holds a string that is not valid Unicode."""
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
