"""Routes of the audio family: OpenAI's speech to text. Thin: the voice service does the work."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from intramuros.api.sse import sse_response
from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal
from intramuros.voice import protocol as p
from intramuros.voice.service import Rendered, VoiceService

router = APIRouter(prefix="/v1")


def _voice(request: Request) -> VoiceService:
    service: VoiceService = request.app.state.workloads["voice"]
    return service


async def _answer(request: Request, who: Principal, task: p.Task) -> Response:
    async with request.form() as form:  # closes the spooled upload afterwards
        req = await p.audio_request(form, task)
    result = await _voice(request).transcribe(req, who)
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
