"""Routes of the kyc family. Thin: the workload's service does the work."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from intramuros.gate.auth import admin, principal
from intramuros.gate.tenants import Principal
from intramuros.kyc import protocol as kp
from intramuros.kyc.report import render_case
from intramuros.kyc.service import KycService
from intramuros.platform.lean import lean

router = APIRouter(prefix="/v1")


def _kyc(request: Request) -> KycService:
    service: KycService = request.app.state.workloads["kyc"]
    return service


def _subject(model: kp.SubjectIn) -> dict[str, Any]:
    return model.model_dump(include=set(kp.SubjectIn.model_fields), exclude_none=True)


@router.post("/kyc/screen", response_model=kp.ScreenResponse, response_model_by_alias=True)
@lean
async def screen(body: kp.ScreenRequest, request: Request,
                 who: Principal = Depends(principal)) -> Response:  # fmt: skip
    """Screen one subject: ranked matches with explanations; a case when one alerts."""
    results = await _kyc(request).screen(who, [_subject(body)], body.lists, body.limit,
                                         "/v1/kyc/screen")  # fmt: skip
    # Serialised once by pydantic, as FastAPI would with the response model (this is
    # the screening hot path: the route is lean).
    answer = kp.ScreenResponse.model_validate(results[0]).model_dump_json(by_alias=True)
    return Response(answer, media_type="application/json")


@router.post("/kyc/screen/batch", response_model=kp.BatchResponse, response_model_by_alias=True)
async def screen_batch(body: kp.BatchRequest, request: Request,
                       who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """Screen up to 1000 subjects in one call (one snapshot of the lists)."""
    started = time.perf_counter()
    results = await _kyc(request).screen(who, [_subject(s) for s in body.subjects], body.lists,
                                         body.limit, "/v1/kyc/screen/batch")  # fmt: skip
    elapsed = max(time.perf_counter() - started, 1e-9)
    return {"object": "list", "data": results,
            "screenings_per_second": round(len(results) / elapsed, 1)}  # fmt: skip


@router.get("/kyc/lists")
async def lists(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    """The loaded lists: version, entity count, list date, file sha256."""
    return {"object": "list", "data": await _kyc(request).lists()}


@router.get("/kyc/threshold")
async def get_threshold(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    """The caller's tenant's alert threshold."""
    return {"tenant": who.tenant, "threshold": await _kyc(request).threshold(who.tenant)}


@router.put("/kyc/threshold")
async def put_threshold(body: kp.ThresholdRequest, request: Request,
                        who: Principal = Depends(admin)) -> dict[str, Any]:  # fmt: skip
    """Set the alert threshold of the caller's tenant (admins; operators: any tenant)."""
    tenant = await _kyc(request).set_threshold(who, body)
    return {"tenant": tenant, "threshold": body.threshold}


@router.get("/kyc/cases")
async def cases(request: Request, status: str | None = Query(default=None, max_length=20),
                limit: int = Query(default=100, ge=1, le=1000),
                who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """The caller's tenant's cases, newest first."""
    return {"object": "list", "data": await _kyc(request).cases(who, status, limit)}


@router.get("/kyc/cases/{case_id}")
async def case(case_id: str, request: Request,
               who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """One case with its evidence and decisions (another tenant's: 404)."""
    return await _kyc(request).case(who, case_id)


@router.post("/kyc/cases/{case_id}/decision")
async def decide(case_id: str, body: kp.DecisionRequest, request: Request,
                 who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """Record an analyst's decision: true_match, false_positive or escalate."""
    return await _kyc(request).decide(who, case_id, body)


@router.post("/kyc/cases/{case_id}/summary")
async def summarise(case_id: str, request: Request, body: kp.SummaryRequest | None = None,
                    who: Principal = Depends(principal)) -> dict[str, Any]:  # fmt: skip
    """Have a local model draft a short summary of the case (marked machine-drafted)."""
    return await _kyc(request).summarise(who, case_id, body.model if body else None)


@router.get("/kyc/cases/{case_id}/report", response_class=HTMLResponse)
async def report(case_id: str, request: Request,
                 who: Principal = Depends(principal)) -> HTMLResponse:  # fmt: skip
    """The case as an HTML page an analyst can file."""
    return HTMLResponse(render_case(await _kyc(request).case(who, case_id)))
