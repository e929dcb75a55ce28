"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from intramuros import __version__
from intramuros.api import errors
from intramuros.api.middleware import BodyLimitMiddleware
from intramuros.api.routes import admin, health, inference, models
from intramuros.serving.service import InferenceService
from intramuros.settings import Settings


def create_app(settings: Settings, service: InferenceService | None = None) -> FastAPI:
    """Build the app; the service is created once and started in the lifespan."""
    svc = service or InferenceService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
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
    errors.install(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(inference.router)
    app.include_router(admin.router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    return app
