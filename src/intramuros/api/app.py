"""The FastAPI application factory."""

from __future__ import annotations

import gc
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from intramuros import __version__
from intramuros.api import errors
from intramuros.api.lean import LeanDispatch, lean_routes
from intramuros.api.lifecycle import PurgeSchedule, guard_egress
from intramuros.api.middleware import BodyLimitMiddleware
from intramuros.api.routes import admin, health, inference, models
from intramuros.platform.plugin import Workload, WorkloadPlugin, installed_workloads
from intramuros.router.service import RouterService
from intramuros.serving.service import InferenceService
from intramuros.settings import Settings

# FastAPI's OpenTelemetry bridge looks for a configured provider on every request. Nothing
# here exports telemetry (nothing leaves the building; /metrics is ours): off, where the
# installed FastAPI has it.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


def build_workloads(
    core: InferenceService, plugins: list[WorkloadPlugin] | None = None
) -> dict[str, Workload]:
    """The installed workloads' services (document AI, KYC, voice...), each built once.

    Their modules import no heavy library at this point: OCR and speech models
    load on first use, and a missing extra is named in that call's error.
    """
    return {p.name: p.build(core) for p in (installed_workloads() if plugins is None
                                            else plugins)}  # fmt: skip


def create_app(settings: Settings, service: InferenceService | None = None) -> FastAPI:
    """Build the app; the service is created once and started in the lifespan."""
    svc = service or InferenceService(settings)
    plugins = installed_workloads()
    workloads = build_workloads(svc, plugins)
    routing = RouterService(svc)  # routes' shape checked with the settings; members at start
    schedule = PurgeSchedule(svc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.prepare()
        if settings.egress_guard:
            guard_egress(svc)  # before any model loads: nothing reaches out from here on
        await svc.start()
        started: list[Workload] = []
        try:
            await routing.start()
            for workload in workloads.values():
                await workload.start()
                started.append(workload)
            schedule.start()
            # What start-up allocated lives as long as the server: out of the collector's
            # sight, so that its first full collection does not pause one request's loop.
            gc.collect()
            gc.freeze()
            yield
        finally:
            await schedule.close()
            for workload in reversed(started):
                await workload.close()
            await svc.close()

    app = FastAPI(
        title="intramuros",
        version=__version__,
        description="OpenAI/Mistral-compatible API on open models, within your walls.",
        lifespan=lifespan,
        **_NO_TELEMETRY,
    )
    # No 307 to the slash-less path: an API answers the path it was asked, or 404.
    app.router.redirect_slashes = False
    app.state.service = svc
    app.state.settings = settings
    app.state.workloads = workloads
    app.state.router = routing
    errors.install(app)
    routers = [health.router, models.router, inference.router, admin.router]
    routers += [router for plugin in plugins for router in plugin.routers()]
    for router in routers:
        app.include_router(router)
    path_limits: dict[str, int] = {}
    for workload in workloads.values():
        path_limits.update(workload.body_limits)
    # Added first, so it runs inside the body limit: it sees bodies already bounded.
    app.add_middleware(LeanDispatch, routes=lean_routes(routers))
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, path_limits=path_limits,
                       max_json_values=settings.max_json_values)
    return app
