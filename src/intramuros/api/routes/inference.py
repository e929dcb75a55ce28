"""Model-calling routes: chat, completions, embeddings. Thin: the services do the work.

A request whose ``model`` is a route (``auto`` or a configured profile) goes
through the router, which picks the model; any other goes straight to the
core service. Every model answer carries ``x-intramuros-model``: the model
that produced it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal
from intramuros.platform.lean import lean
from intramuros.platform.sse import sse_response
from intramuros.protocol import openai as p
from intramuros.router.service import Routed, RouterService
from intramuros.serving.service import InferenceService

router = APIRouter(prefix="/v1")
Caller = Depends(principal)
MODEL_HEADER = "x-intramuros-model"


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


def _router(request: Request) -> RouterService:
    routing: RouterService = request.app.state.router
    return routing


def _model_header(model: str) -> str:
    # Header values are Latin-1 on the wire: a model id outside ASCII is percent-encoded.
    return quote(model, safe="-._~:/@+")


def _respond(result: Any, model: str, response: Response) -> Any:
    value = _model_header(model)
    if isinstance(result, BaseModel):
        # Serialised once, by pydantic, as FastAPI would (by alias, JSON mode), without its
        # second validation and encoding pass: this is every model call's path.
        whole = Response(result.model_dump_json(by_alias=True), media_type="application/json")
        for name, header in response.headers.items():
            if name not in ("content-length", "content-type"):
                whole.headers[name] = header
        whole.headers[MODEL_HEADER] = value
        return whole
    stream = sse_response(result)
    stream.headers[MODEL_HEADER] = value
    return stream


def _routed(routed: Routed, response: Response) -> Any:
    return _respond(routed.result, routed.model, response)


@router.post("/chat/completions", response_model=None)
@lean
async def chat_completions(
    body: p.ChatCompletionRequest, request: Request, response: Response, who: Principal = Caller
) -> Any:
    """OpenAI ``POST /v1/chat/completions`` (Mistral's spellings accepted)."""
    if _router(request).is_route(body.model):
        return _routed(await _router(request).chat(body, who), response)
    return _respond(await _service(request).chat(body, who), body.model, response)


@router.post("/completions", response_model=None)
@lean
async def completions(
    body: p.CompletionRequest, request: Request, response: Response, who: Principal = Caller
) -> Any:
    """OpenAI ``POST /v1/completions``."""
    if _router(request).is_route(body.model):
        return _routed(await _router(request).completion(body, who), response)
    return _respond(await _service(request).completion(body, who), body.model, response)


@router.post("/embeddings", response_model=p.EmbeddingResponse)
async def embeddings(
    body: p.EmbeddingRequest, request: Request, response: Response, who: Principal = Caller
) -> p.EmbeddingResponse:
    """OpenAI ``POST /v1/embeddings``."""
    if _router(request).is_route(body.model):
        routed = await _router(request).embeddings(body, who)
        response.headers[MODEL_HEADER] = _model_header(routed.model)
        result: p.EmbeddingResponse = routed.result
        return result
    embedded = await _service(request).embeddings(body, who)
    response.headers[MODEL_HEADER] = _model_header(body.model)
    return embedded
