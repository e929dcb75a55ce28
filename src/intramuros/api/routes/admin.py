"""Tenants (operators), keys and policies (a tenant's admin), usage, requests and ledger."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from intramuros.errors import InvalidRequest, NotFound, PermissionDenied
from intramuros.gate import scope
from intramuros.gate.auth import admin, operator, principal
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.gate.quotas import usage_report
from intramuros.gate.tenants import Principal
from intramuros.protocol import admin as p
from intramuros.serving.service import InferenceService
from intramuros.store.db import request_log

router = APIRouter(prefix="/v1")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


def _day(value: str | None, param: str) -> str | None:
    if value is not None and not _DAY.fullmatch(value):
        raise InvalidRequest(f"{param} must be a date YYYY-MM-DD.", param=param)
    return value


@router.get("/usage")
async def get_usage(
    request: Request,
    tenant: str | None = Query(default=None, max_length=64),
    since: str | None = Query(default=None, max_length=10),
    until: str | None = Query(default=None, max_length=10),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Token and request totals by tenant, model and day (own tenant; operators: any)."""
    svc = _service(request)
    tenant_id = await asyncio.to_thread(scope.readable, svc.tenants, who, tenant)
    rows = await asyncio.to_thread(usage_report, svc.db, tenant=tenant_id,
                                   since=_day(since, "since"), until=_day(until, "until"))
    return {"object": "list", "data": rows}


@router.get("/requests")
async def list_requests(
    request: Request,
    limit: int = Query(default=50, ge=1, le=1000),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """The latest calls of the caller's tenant (operators: of every tenant)."""
    query = sa.select(request_log).order_by(request_log.c.id.desc()).limit(limit)
    if not who.is_operator:
        query = query.where(request_log.c.tenant == who.tenant)
    return {"object": "list", "data": await asyncio.to_thread(_rows, request, query)}


@router.get("/requests/{request_id}")
async def get_request(
    request_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """One call by id; another tenant's id answers 404, like a missing one."""
    query = sa.select(request_log).where(request_log.c.request_id == request_id)
    if not who.is_operator:
        query = query.where(request_log.c.tenant == who.tenant)
    rows = await asyncio.to_thread(_rows, request, query)
    if not rows:
        raise NotFound(f"No request '{request_id}'.", param="request_id")
    return rows[0]


def _rows(request: Request, query: Any) -> list[dict[str, Any]]:
    with _service(request).db.begin() as conn:
        return [
            {k: v for k, v in dict(row).items() if k != "id"}
            for row in conn.execute(query).mappings()
        ]


# -- tenants: operators; a tenant's admin sees and sets its own policy ---------------


@router.get("/admin/tenants")
async def list_tenants(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
    """Every tenant with its policy (a tenant's admin: its own only)."""
    svc = _service(request)
    listed = await asyncio.to_thread(svc.tenants.all)
    return {"object": "list", "data": [t.to_json() for t in listed
                                       if who.may_administer(t.id)]}  # fmt: skip


@router.post("/admin/tenants", status_code=201)
async def create_tenant(
    body: p.TenantCreateRequest, request: Request, who: Principal = Depends(operator)
) -> dict[str, Any]:
    """Create a tenant (operators)."""
    try:
        policy = TenantPolicy.model_validate(body.policy or {})
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid policy: {exc.errors()[0]['msg']}", param="policy") from None
    svc = _service(request)
    info = await asyncio.to_thread(svc.tenants.create, body.name, policy)
    await asyncio.to_thread(svc.audit, who, "tenant_create", info.id, name=info.name,
                            policy=policy.model_dump())
    return info.to_json()


@router.delete("/admin/tenants/{name}")
async def delete_tenant(
    name: str, request: Request, who: Principal = Depends(operator)
) -> dict[str, Any]:
    """Delete a tenant and everything it stored (operators); its id is never reused."""
    tomb, counts = await asyncio.to_thread(_service(request).delete_tenant, who, name)
    return {"name": name, "id": tomb.id, "deleted": True, "purged": counts}


@router.get("/admin/tenants/{name}/policy")
async def get_policy(name: str, request: Request,
                     who: Principal = Depends(admin)) -> dict[str, Any]:  # fmt: skip
    """A tenant's policy (its admin, or an operator)."""
    svc = _service(request)
    tenant_id = await asyncio.to_thread(scope.managed, svc.tenants, who, name)
    policy = await asyncio.to_thread(svc.tenants.policy, tenant_id)
    return {"name": name, "id": tenant_id, "policy": policy.model_dump()}


@router.patch("/admin/tenants/{name}/policy")
async def set_policy(name: str, body: p.PolicyUpdateRequest, request: Request,
                     who: Principal = Depends(admin)) -> dict[str, Any]:  # fmt: skip
    """Change a tenant's policy: personal data, content, retention; limits (operators only)."""
    svc = _service(request)
    tenant_id = await asyncio.to_thread(scope.managed, svc.tenants, who, name)
    changes = body.model_dump(exclude_unset=True)
    if "limits" in changes and not who.is_operator:
        raise PermissionDenied("A tenant's limits are set by an operator.", param="limits")
    current = await asyncio.to_thread(svc.tenants.policy, tenant_id)
    try:
        policy = TenantPolicy.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid policy: {exc.errors()[0]['msg']}", param="policy") from None
    await asyncio.to_thread(svc.tenants.set_policy, tenant_id, policy)
    await asyncio.to_thread(svc.audit, who, "tenant_policy", tenant_id, policy=policy.model_dump())
    return {"name": name, "id": tenant_id, "policy": policy.model_dump()}


# -- keys: a tenant's admin manages its own tenant's user and admin keys -----------


@router.post("/admin/keys", status_code=201)
async def create_key(
    body: p.KeyCreateRequest, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Create a key; the response is the only time the key is shown."""
    try:
        limits = Limits.model_validate(body.limits or {})
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid limits: {exc.errors()[0]['msg']}", param="limits") from None
    svc = _service(request)
    tenant_id = await asyncio.to_thread(scope.managed, svc.tenants, who, body.tenant)
    key, info = await asyncio.to_thread(
        svc.tenants.create_key, tenant_id, role=body.role,
        expires_in=body.expires_in_days * 86400 if body.expires_in_days else None,
        models=tuple(body.models) if body.models else None, limits=limits,
    )
    await asyncio.to_thread(svc.audit, who, "key_create", tenant_id, key_id=info.id,
                            role=body.role)
    return {"key": key, **info.to_json()}


@router.get("/admin/keys")
async def list_keys(
    request: Request,
    tenant: str | None = Query(default=None, max_length=64),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    """Keys, never their secrets (a tenant's admin: its own tenant's)."""
    svc = _service(request)
    tenant_id = await asyncio.to_thread(scope.readable, svc.tenants, who, tenant)
    keys = await asyncio.to_thread(svc.tenants.keys, tenant_id)
    return {"object": "list", "data": [k.to_json() for k in keys]}


@router.delete("/admin/keys/{key_id}")
async def revoke_key(
    key_id: str, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Revoke a key at once (a tenant's admin: its own tenant's user and admin keys)."""
    svc = _service(request)
    await asyncio.to_thread(svc.revoke_key, who, key_id)
    return {"id": key_id, "revoked": True}


# -- the ledger: operators read it all; a tenant's admin reads its own records ------


def _entry(e: Any) -> dict[str, Any]:
    return {
        "seq": e.seq, "ts": e.ts, "kind": e.kind, "tenant": e.tenant, "key_id": e.key_id,
        "subject": e.subject, "data": e.data, "has_content": e.has_content,
        "content_digest": e.content_digest, "prev_hash": e.prev_hash, "hash": e.hash,
    }  # fmt: skip


@router.get("/admin/ledger")
async def ledger_records(
    request: Request,
    tenant: str | None = Query(default=None, max_length=64),
    after_seq: int = Query(default=0, ge=0, le=2**62),
    limit: int = Query(default=100, ge=1, le=1000),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    """Ledger records in order, content not included (a tenant's admin: its own)."""
    svc = _service(request)
    tenant_id = await asyncio.to_thread(scope.readable, svc.tenants, who, tenant)
    rows = await asyncio.to_thread(svc.ledger.records, tenant_id, after_seq=after_seq,
                                   limit=limit)
    return {"object": "list", "data": [_entry(e) for e in rows]}


@router.get("/admin/ledger/verify")
async def ledger_verify(request: Request,
                        who: Principal = Depends(operator)) -> dict[str, Any]:  # fmt: skip
    """Verify the whole chain now (operators: it spans every tenant)."""
    report = await asyncio.to_thread(_service(request).ledger.verify)
    return report.to_dict()


@router.get("/admin/ledger/{seq}/content")
async def ledger_content(
    seq: int, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """A record's decrypted content (needs the server's ledger key); null once erased."""
    if not 1 <= seq <= 2**62:  # outside the database's integers: no such record
        raise NotFound(f"No ledger record {seq}.", param="seq")
    svc = _service(request)
    if not who.is_operator:
        # Another tenant's record answers exactly like a missing one.
        found = await asyncio.to_thread(svc.ledger.records, who.tenant, after_seq=seq - 1,
                                        limit=1)  # fmt: skip
        if not found or found[0].seq != seq:
            raise NotFound(f"Ledger record {seq} does not exist.")
    content = await asyncio.to_thread(svc.ledger.read_content, seq)
    await asyncio.to_thread(svc.audit, who, "ledger_read_content", None, seq=seq)
    return {"seq": seq, "content": content}
