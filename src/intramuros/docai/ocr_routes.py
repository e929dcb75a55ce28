"""Routes of the ocr family: Mistral's ``POST /v1/ocr`` and OCR batch jobs.

Thin: the docai service does the work. OCR bodies are large (an inline
document is up to ``files_max_bytes`` of base64, the body limit follows), so
their JSON is parsed, and the answer serialised, off the event loop: a
request may slow itself, never the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.routing import APIRoute

from intramuros.docai import protocol as dp
from intramuros.docai.inline import split_body
from intramuros.docai.service import DocaiService
from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal
from intramuros.platform.offload import run_cpu


class OffLoopJSON(Request):
    """A request whose JSON body is parsed in the CPU pool, its inline document cut out.

    ``inline`` is the base64 payload of a long data URL (see
    :mod:`intramuros.docai.inline`), or None.
    """

    inline: list[bytes] | None = None
    _error: json.JSONDecodeError | None = None

    async def prepare(self) -> None:
        """Read and parse the body now (``IntramurosError`` for a refused one)."""
        if self.headers.get("content-type", "application/json").find("json") == -1:
            return  # FastAPI refuses it without parsing
        body = await self.body()
        if not body:
            return
        try:
            split = await run_cpu(split_body, body)
        except json.JSONDecodeError as exc:
            self._error = exc  # FastAPI reports it as it does any JSON error
            return
        except ValueError:  # bytes that are not UTF-8 (a UnicodeDecodeError)
            self._error = json.JSONDecodeError("the body is not valid UTF-8", "", 0)
            return
        self._json = split.parsed
        self.inline = split.payload

    async def json(self) -> Any:
        if self._error is not None:
            raise self._error
        if not hasattr(self, "_json"):
            await self.prepare()
            if self._error is not None:
                raise self._error
        return self._json


class _OffLoopRoute(APIRoute):
    """FastAPI's route, handing the endpoint a prepared :class:`OffLoopJSON` request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            prepared = OffLoopJSON(request.scope, request.receive)
            await prepared.prepare()  # a refusal propagates to the error handlers
            return await handler(prepared)

        return route


router = APIRouter(prefix="/v1", route_class=_OffLoopRoute)
Caller = Depends(principal)


def _service(request: Request) -> DocaiService:
    service: DocaiService = request.app.state.workloads["docai"]
    return service


@router.post("/ocr", response_model=dp.OCRResponse, response_model_exclude_none=False)
async def ocr(body: dp.OCRRequest, request: Request, who: Principal = Caller) -> Response:
    """Mistral's OCR: a document (data: URL or uploaded file id) to markdown pages.

    The read stops when the client disconnects.
    """
    inline = request.inline if isinstance(request, OffLoopJSON) else None
    answer = await _service(request).ocr(body, who, disconnected=request.is_disconnected,
                                         inline=inline)  # fmt: skip
    return Response(await run_cpu(answer.model_dump_json), media_type="application/json")


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
