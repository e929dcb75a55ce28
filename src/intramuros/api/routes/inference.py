"""Model-calling routes: chat, completions, embeddings. Thin: the service does the work."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from intramuros.api import protocol as p
from intramuros.api.sse import sse_response
from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal
from intramuros.serving.service import InferenceService

router = APIRouter(prefix="/v1")
Caller = Depends(principal)


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


def _respond(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result
    return sse_response(result)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: p.ChatCompletionRequest, request: Request, who: Principal = Caller
) -> Any:
    """OpenAI ``POST /v1/chat/completions`` (Mistral's spellings accepted)."""
    return _respond(await _service(request).chat(body, who))


@router.post("/completions", response_model=None)
async def completions(body: p.CompletionRequest, request: Request, who: Principal = Caller) -> Any:
    """OpenAI ``POST /v1/completions``."""
    return _respond(await _service(request).completion(body, who))


@router.post("/embeddings", response_model=p.EmbeddingResponse)
async def embeddings(
    body: p.EmbeddingRequest, request: Request, who: Principal = Caller
) -> p.EmbeddingResponse:
    """OpenAI ``POST /v1/embeddings``."""
    return await _service(request).embeddings(body, who)
