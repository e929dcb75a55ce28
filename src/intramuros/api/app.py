"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from intramuros import __version__
from intramuros.api import errors
from intramuros.api.middleware import BodyLimitMiddleware
from intramuros.api.routes import admin, audio, files, health, inference, kyc, models, ocr
from intramuros.router.service import RouterService
from intramuros.serving.service import InferenceService
from intramuros.serving.workload import Workload
from intramuros.settings import Settings


def build_workloads(core: InferenceService) -> dict[str, Workload]:
    """The workload services (document AI, KYC, voice), each built once from the core one.

    Their modules import no heavy library at this point: OCR and speech models
    load on first use, and a missing extra is named in that call's error.
    """
    from intramuros.docai.service import DocaiService
    from intramuros.kyc.service import KycService
    from intramuros.voice.service import VoiceService

    built: list[Workload] = [DocaiService(core), KycService(core), VoiceService(core)]
    return {w.name: w for w in built}


def create_app(settings: Settings, service: InferenceService | None = None) -> FastAPI:
    """Build the app; the service is created once and started in the lifespan."""
    svc = service or InferenceService(settings)
    workloads = build_workloads(svc)
    routing = RouterService(svc)  # routes' shape checked with the settings; members at start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        started: list[Workload] = []
        try:
            await routing.start()
            for workload in workloads.values():
                await workload.start()
                started.append(workload)
            # What start-up allocated lives as long as the server: out of the collector's
            # sight, so that its first full collection does not pause one request's loop.
            gc.collect()
            gc.freeze()
            yield
        finally:
            for workload in reversed(started):
                await workload.close()
            await svc.close()

    app = FastAPI(
        title="intramuros",
        version=__version__,
        description="OpenAI/Mistral-compatible API on open models, within your walls.",
        lifespan=lifespan,
    )
    # No 307 to the slash-less path: an API answers the path it was asked, or 404.
    app.router.redirect_slashes = False
    app.state.service = svc
    app.state.settings = settings
    app.state.workloads = workloads
    app.state.router = routing
    errors.install(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(inference.router)
    app.include_router(admin.router)
    for family in (files, ocr, kyc, audio):
        app.include_router(family.router)
    path_limits: dict[str, int] = {}
    for workload in workloads.values():
        path_limits.update(getattr(workload, "body_limits", {}))
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, path_limits=path_limits,
                       max_json_values=settings.max_json_values)
    return app
