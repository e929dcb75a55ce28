"""Routes of the fine-tuning family (OpenAI's and Mistral's paths). Thin: the service works."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request

from intramuros.forge import protocol as p
from intramuros.forge.service import ForgeService
from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal

router = APIRouter(prefix="/v1/fine_tuning/jobs")

JobId = Path(max_length=64, alias="fine_tuning_job_id")
After = Query(default=None, max_length=64)
Limit = Query(default=20, ge=1, le=100)


def _forge(request: Request) -> ForgeService:
    service: ForgeService = request.app.state.workloads["forge"]
    return service


@router.post("")
async def create(body: p.CreateJob, request: Request,
                 who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """Create a fine-tuning job: its files are checked, then it trains in the worker."""
    return await _forge(request).create(body, who)


@router.get("")
async def list_jobs(request: Request, after: str | None = After, limit: int = Limit,
                    page: int | None = Query(default=None, ge=0, le=10_000),
                    page_size: int | None = Query(default=None, ge=1, le=100),
                    status: str | None = Query(default=None, max_length=30),
                    who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """The tenant's jobs, newest first (``after``/``limit``; Mistral's ``page_size``)."""
    del page  # Mistral's page numbers: the cursor is what pages here
    return await _forge(request).list(who, after, page_size or limit, status)


@router.get("/{fine_tuning_job_id}")
async def get(request: Request, job_id: str = JobId,
              who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    return await _forge(request).get(who, job_id)


@router.post("/{fine_tuning_job_id}/cancel")
async def cancel(request: Request, job_id: str = JobId,
                 who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """Cancel: at once if it has not started, else before its next step."""
    return await _forge(request).cancel(who, job_id)


@router.post("/{fine_tuning_job_id}/start")
async def start(request: Request, job_id: str = JobId,
                who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """Mistral's start of a job made with ``auto_start: false``."""
    return await _forge(request).start_job(who, job_id)


@router.get("/{fine_tuning_job_id}/events")
async def events(request: Request, job_id: str = JobId, after: str | None = After,
                 limit: int = Limit,
                 who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    return await _forge(request).events(who, job_id, after, limit)


@router.get("/{fine_tuning_job_id}/checkpoints")
async def checkpoints(request: Request, job_id: str = JobId, after: str | None = After,
                      limit: int = Limit,
                      who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    return await _forge(request).checkpoints(who, job_id, after, limit)
