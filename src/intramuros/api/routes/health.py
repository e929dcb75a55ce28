"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from intramuros.serving.service import InferenceService

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and answering."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 once the preloaded models are loaded and healthy, else 503."""
    service: InferenceService = request.app.state.service
    loaded = service.pool.loaded()
    healthy = {name: m.engine.health() for name, m in loaded.items()}
    ready = service.ready and all(healthy.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "models": healthy,
        "error": service.preload_error,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    service: InferenceService = request.app.state.service
    return Response(service.metrics.render(), media_type=service.metrics.content_type)
