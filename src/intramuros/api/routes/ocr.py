"""Routes of the ocr family: Mistral's ``POST /v1/ocr`` and OCR batch jobs.

Thin: the docai service does the work.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from intramuros.docai import protocol as dp
from intramuros.docai.service import DocaiService
from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal

router = APIRouter(prefix="/v1")
Caller = Depends(principal)


def _service(request: Request) -> DocaiService:
    service: DocaiService = request.app.state.workloads["docai"]
    return service


@router.post("/ocr", response_model=dp.OCRResponse, response_model_exclude_none=False)
async def ocr(body: dp.OCRRequest, request: Request, who: Principal = Caller) -> dp.OCRResponse:
    """Mistral's OCR: a document (data: URL or uploaded file id) to markdown pages."""
    return await _service(request).ocr(body, who)


@router.post("/batch/ocr", response_model=dp.OCRJob)
async def create_ocr_job(
    body: dp.OCRJobRequest, request: Request, who: Principal = Caller
) -> dp.OCRJob:
    """Queue the OCR of uploaded files; poll ``GET /v1/batch/ocr/{id}``."""
    return await _service(request).jobs.submit(who, body)


@router.get("/batch/ocr", response_model=dp.OCRJobList)
async def list_ocr_jobs(
    request: Request, limit: int = Query(default=20, ge=1, le=100), who: Principal = Caller
) -> dp.OCRJobList:
    """The tenant's OCR jobs, newest first."""
    return await _service(request).jobs.list_jobs(who, limit)


@router.get("/batch/ocr/{job_id}", response_model=dp.OCRJob)
async def get_ocr_job(job_id: str, request: Request, who: Principal = Caller) -> dp.OCRJob:
    """A job's status and counts."""
    return await _service(request).jobs.get(who, job_id)


@router.get("/batch/ocr/{job_id}/results", response_model=dp.OCRJobResults)
async def ocr_job_results(
    job_id: str,
    request: Request,
    after: int = Query(default=-1, ge=-1, le=1_000_000),
    limit: int = Query(default=100, ge=1, le=1000),
    who: Principal = Caller,
) -> dp.OCRJobResults:
    """Each file's OCR answer (or error) so far, by index: ``after`` the last one seen."""
    return await _service(request).jobs.results(who, job_id, after=after, limit=limit)


@router.post("/batch/ocr/{job_id}/cancel", response_model=dp.OCRJob)
async def cancel_ocr_job(job_id: str, request: Request, who: Principal = Caller) -> dp.OCRJob:
    """Cancel a job (a running one stops after its current file)."""
    return await _service(request).jobs.cancel(who, job_id)
