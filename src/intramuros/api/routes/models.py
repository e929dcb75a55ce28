"""``/v1/models``: the catalogue, in OpenAI's shape, with provenance."""

from __future__ import annotations

from fastapi import APIRouter, Request

from intramuros.api import protocol as p
from intramuros.serving.service import InferenceService

router = APIRouter(prefix="/v1")


@router.get("/models", response_model=p.ModelList)
async def list_models(request: Request) -> p.ModelList:
    """Every model, with sha256, licence, origin and capabilities under ``intramuros``."""
    service: InferenceService = request.app.state.service
    return service.list_models()


@router.get("/models/{model_id:path}", response_model=p.ModelCard)
async def get_model(model_id: str, request: Request) -> p.ModelCard:
    """One model; 404 ``model_not_found`` if unknown."""
    service: InferenceService = request.app.state.service
    return service.model_card(service.catalog.get(model_id))
