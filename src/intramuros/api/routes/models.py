"""``/v1/models``: the catalogue, in OpenAI's shape, with provenance."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from intramuros.errors import ModelNotFound
from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal
from intramuros.protocol import openai as p
from intramuros.serving.service import InferenceService

router = APIRouter(prefix="/v1")


@router.get("/models", response_model=p.ModelList)
async def list_models(request: Request, who: Principal = Depends(principal)) -> p.ModelList:
    """Every model the key may use, with sha256, licence, origin and capabilities.

    Routes (``auto`` and the configured profiles) follow, marked
    ``intramuros.kind = "route"``: naming one lets the router pick the model.
    """
    service: InferenceService = request.app.state.service
    listing = service.list_models(who)
    routing = getattr(request.app.state, "router", None)
    if routing is not None:
        now = int(time.time())
        listing.data.extend(
            p.ModelCard(id=name, created=now, owned_by="intramuros", name=name,
                        capabilities=p.ModelCapabilities(completion_chat=True),
                        intramuros={"kind": "route"})
            for name in routing.route_names()
        )
    return listing


@router.get("/models/{model_id:path}", response_model=p.ModelCard)
async def get_model(
    model_id: str, request: Request, who: Principal = Depends(principal)
) -> p.ModelCard:
    """One model; 404 ``model_not_found`` if unknown (or not allowed for this key)."""
    service: InferenceService = request.app.state.service
    if not who.may_use(model_id):
        raise ModelNotFound(model_id)
    return service.model_card(service.catalog.get(model_id))
