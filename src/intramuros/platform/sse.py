"""Server-sent events in OpenAI's streaming shape."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel
from starlette.responses import StreamingResponse

from intramuros.errors import IntramurosError, ServerError, error_body

log = logging.getLogger(__name__)


async def _events(chunks: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + chunk.model_dump_json(exclude_unset=False).encode() + b"\n\n"
    except IntramurosError as exc:
        # Headers are gone already: the error travels as an event, then the stream ends.
        yield b"data: " + _json(error_body(exc)) + b"\n\n"
        return
    except Exception:
        log.exception("stream failed")
        yield b"data: " + _json(error_body(ServerError("Internal server error."))) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def _json(obj: object) -> bytes:
    import json

    return json.dumps(obj).encode()


def sse_response(chunks: AsyncIterator[BaseModel]) -> StreamingResponse:
    """A ``text/event-stream`` response ending with ``data: [DONE]``."""
    return StreamingResponse(
        _events(chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
