"""Routes of the audio family: OpenAI's speech to text. Thin: the voice service does the work.

A transcription can take minutes before its first byte (a long upload is
checked, then transcribed); if the client disconnects meanwhile, the work is
cancelled, and the service stops its decoding and the model's lane at their
next step (a stream already started is stopped by the streaming response,
which watches for the disconnect itself).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal
from intramuros.platform.sse import sse_response
from intramuros.voice import protocol as p
from intramuros.voice.service import Rendered, VoiceService

router = APIRouter(prefix="/v1")

T = TypeVar("T")
# nginx's status for a request whose client closed the connection (nobody reads it).
CLIENT_CLOSED = 499


def _voice(request: Request) -> VoiceService:
    service: VoiceService = request.app.state.workloads["voice"]
    return service


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body has been read by now)."""
    while True:
        try:
            message = await request.receive()
        except OSError:  # the connection broke: as good as closed
            return
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # anything else is not expected; never spin on it


async def _while_connected(request: Request, work: asyncio.Task[T]) -> T | None:
    """``work``'s result, or None once the client has gone (``work`` is then cancelled).

    Either way ``work`` has finished (its records written) when this returns.
    """
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is shutting down
        await _cancelled(work)
        raise
    finally:
        gone.cancel()
    if work in done:
        return work.result()
    await _cancelled(work)
    return None


async def _cancelled(work: asyncio.Task[Any]) -> None:
    """Cancel ``work`` and wait for it to end; what it raised is of no use to anyone now."""
    work.cancel()
    await asyncio.wait({work})
    if not work.cancelled():
        with contextlib.suppress(BaseException):
            work.result()


async def _answer(request: Request, who: Principal, task: p.Task) -> Response:
    async with request.form() as form:  # closes the spooled upload afterwards
        req = await p.audio_request(form, task)
    work = asyncio.create_task(_voice(request).transcribe(req, who))
    result = await _while_connected(request, work)
    if result is None:
        return Response(status_code=CLIENT_CLOSED)
    if not isinstance(result, Rendered):
        return sse_response(result)
    if isinstance(result.body, dict):
        return JSONResponse(result.body, media_type=result.media_type)
    return PlainTextResponse(result.body, media_type=result.media_type)


@router.post("/audio/transcriptions", response_model=None)
async def transcriptions(request: Request, who: Principal = Depends(principal)) -> Response:
    """Transcribe audio in its own language (multipart: file, model, language, ...)."""
    return await _answer(request, who, "transcribe")


@router.post("/audio/translations", response_model=None)
async def translations(request: Request, who: Principal = Depends(principal)) -> Response:
    """Translate speech into English text (multipart: file, model, prompt, ...)."""
    return await _answer(request, who, "translate")
