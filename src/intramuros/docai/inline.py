"""Inline documents in a JSON body, handled without holding the interpreter for long.

An OCR request may carry its document inline: up to ``files_max_bytes`` of
base64 in one JSON string. ``json.loads``, ``re`` and ``base64`` hold the
interpreter lock for the whole string, so on a 60 MB body they would stop
every other thread, the event loop included, for seconds (threads do not
help). So:

* :func:`split_body` cuts the long data URL's payload out of the raw body
  (found with ``bytes.find`` over slices) before the rest is parsed; the
  rest is small (at most ``MAX_JSON_REST``: an OCR request's options never
  need more), the payload's place in it holds :data:`PLACEHOLDER`;
* :func:`b64decode_sliced` checks and decodes base64 a slice at a time.

Each step holds the lock for about a millisecond, so a large document slows
its own request, never the server.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from intramuros.errors import PayloadTooLarge

# Stands for the cut-out payload in the parsed JSON. Not base64 (``<``, ``>``
# and ``-`` are outside its alphabet), so a client sending it as a payload gets
# "invalid base64", never someone else's document.
PLACEHOLDER = "<inline-document>"
SMALL_BODY = 1024 * 1024  # bodies up to this are parsed as they are
MAX_JSON_REST = 1024 * 1024  # the JSON of a request apart from its inline document
LONG_STRING = 64 * 1024  # a data URL longer than this is cut out
SLICE = 256 * 1024  # bytes per step (a multiple of 4: base64 quanta)
_HEADER_MAX = 512  # ``data:<media type>;base64,``
_WHITESPACE = b" \t\r\n\f\v"


@dataclass
class SplitBody:
    """A parsed JSON body and the base64 payload cut out of it (None if nothing was)."""

    parsed: Any
    payload: list[bytes] | None = None


def find_sliced(data: bytes, sub: bytes, start: int = 0, end: int | None = None) -> int:
    """``data.find(sub, start, end)``, one slice at a time."""
    stop = len(data) if end is None else min(end, len(data))
    pos = start
    while pos < stop:
        upto = min(stop, pos + SLICE + len(sub) - 1)
        found = data.find(sub, pos, upto)
        if found != -1:
            return found
        pos += SLICE
    return -1


def split_body(body: bytes) -> SplitBody:
    """Parse an OCR request's JSON, its long inline data URL's payload cut out first.

    ``json.JSONDecodeError`` for JSON that does not parse; ``PayloadTooLarge``
    when the JSON apart from the inline document is over ``MAX_JSON_REST``.
    """
    if len(body) <= SMALL_BODY:
        return SplitBody(json.loads(body))
    start = find_sliced(body, b'"data:')
    while start != -1:
        if start > MAX_JSON_REST:  # whatever comes next, the rest is already too long
            raise _rest_too_large()
        comma = body.find(b",", start, start + _HEADER_MAX)
        quote = find_sliced(body, b'"', start + 1)
        if comma == -1 or quote == -1 or comma > quote:
            start = find_sliced(body, b'"data:', start + 1)
            continue
        if quote - comma > LONG_STRING:
            if comma + 1 + len(PLACEHOLDER) + len(body) - quote > MAX_JSON_REST:
                raise _rest_too_large()
            payload = _unescape(body, comma + 1, quote)
            rest = body[:comma + 1] + PLACEHOLDER.encode() + body[quote:]
            return SplitBody(json.loads(rest), payload)
        start = find_sliced(body, b'"data:', quote + 1)
    raise _rest_too_large()


def _unescape(body: bytes, start: int, end: int) -> list[bytes]:
    """The payload between ``start`` and ``end``, in slices; ``\\/`` (some encoders
    escape ``/``) becomes ``/``, any other JSON escape is refused (base64 needs none)."""
    out: list[bytes] = []
    pos = start
    while pos < end:
        upto = min(end, pos + SLICE)
        if body[upto - 1] == 0x5C and upto < end:  # keep an escape with what it escapes
            upto += 1
        piece = body[pos:upto]
        if b"\\" in piece:
            piece = piece.replace(b"\\/", b"/")
            if b"\\" in piece:
                from intramuros.files.errors import BadDocument

                raise BadDocument("The inline document's data URL holds a JSON escape; send "
                                  "plain base64.", param="document")  # fmt: skip
        out.append(piece)
        pos = upto
    return out


def _rest_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request's JSON, apart from an inline document (a data: URL), is over "
        f"{MAX_JSON_REST:,} bytes; an OCR request's options never need that much."
    )


def b64decode_sliced(pieces: Iterable[bytes]) -> bytes:
    """Strict base64 (whitespace allowed, as in a data URL), given and decoded a slice at a time.

    ``binascii.Error`` for characters outside the alphabet, misplaced or
    missing padding, as ``base64.b64decode(..., validate=True)``. Only the
    final join of the decoded slices copies the whole document at once (it
    must become one ``bytes`` for the readers); buffers are never grown,
    which would copy all of them each time they double.
    """
    decoded: list[bytes] = []
    carry = b""
    padded = False
    for raw in pieces:
        for pos in range(0, len(raw), SLICE):
            clean = carry + bytes(raw[pos:pos + SLICE]).translate(None, _WHITESPACE)
            whole = len(clean) - len(clean) % 4
            carry = clean[whole:]
            if not whole:
                continue
            if padded:  # something after the padding
                raise binascii.Error("Excess data after padding")
            piece = clean[:whole]
            padded = piece.endswith(b"=")
            decoded.append(binascii.a2b_base64(piece, strict_mode=True))
    if carry:
        raise binascii.Error("Incorrect padding")
    return b"".join(decoded)
