"""Tenant and key administration (admin keys), usage and the request log (own tenant)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from intramuros.api import protocol as p
from intramuros.errors import InvalidRequest, NotFound
from intramuros.gate.auth import admin, principal
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.gate.quotas import usage_report
from intramuros.gate.tenants import Principal
from intramuros.serving.service import InferenceService
from intramuros.store.db import request_log

router = APIRouter(prefix="/v1")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


def _scope(who: Principal, tenant: str | None) -> str | None:
    """The tenant a read may cover: a user only ever sees its own."""
    if who.is_admin:
        return tenant
    if tenant is not None and tenant != who.tenant:
        # Answer exactly as for a tenant that does not exist: nothing to infer.
        raise NotFound(f"No tenant '{tenant}'.", param="tenant")
    return who.tenant


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
    """Token and request totals by tenant, model and day."""
    scope = _scope(who, tenant)
    rows = await asyncio.to_thread(usage_report, _service(request).db, tenant=scope,
                                   since=_day(since, "since"), until=_day(until, "until"))
    return {"object": "list", "data": rows}


@router.get("/requests")
async def list_requests(
    request: Request,
    limit: int = Query(default=50, ge=1, le=1000),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """The latest calls of the caller's tenant (admin: of every tenant)."""
    query = sa.select(request_log).order_by(request_log.c.id.desc()).limit(limit)
    if not who.is_admin:
        query = query.where(request_log.c.tenant == who.tenant)
    return {"object": "list", "data": await asyncio.to_thread(_rows, request, query)}


@router.get("/requests/{request_id}")
async def get_request(
    request_id: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """One call by id; another tenant's id answers 404, like a missing one."""
    query = sa.select(request_log).where(request_log.c.request_id == request_id)
    if not who.is_admin:
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


# -- admin ----------------------------------------------------------------------


@router.get("/admin/tenants")
async def list_tenants(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
    """Every tenant with its policy."""
    svc = _service(request)
    names = await asyncio.to_thread(svc.tenants.names)
    return {"object": "list", "data": [
        {"name": n, "policy": svc.tenants.policy(n).model_dump()} for n in names]}


@router.post("/admin/tenants", status_code=201)
async def create_tenant(
    body: p.TenantCreateRequest, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Create a tenant."""
    try:
        policy = TenantPolicy.model_validate(body.policy or {})
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid policy: {exc.errors()[0]['msg']}", param="policy") from None
    await asyncio.to_thread(_service(request).tenants.create, body.name, policy)
    await asyncio.to_thread(_service(request).audit, who, "tenant_create", body.name,
                            policy=policy.model_dump())
    return {"name": body.name, "policy": policy.model_dump()}


@router.delete("/admin/tenants/{name}")
async def delete_tenant(
    name: str, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Delete a tenant and revoke its keys."""
    await asyncio.to_thread(_service(request).tenants.delete, name)
    await asyncio.to_thread(_service(request).audit, who, "tenant_delete", name)
    return {"name": name, "deleted": True}


@router.post("/admin/keys", status_code=201)
async def create_key(
    body: p.KeyCreateRequest, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Create a key; the response is the only time the key is shown."""
    try:
        limits = Limits.model_validate(body.limits or {})
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid limits: {exc.errors()[0]['msg']}", param="limits") from None
    key, info = await asyncio.to_thread(
        _service(request).tenants.create_key, body.tenant, role=body.role,
        expires_in=body.expires_in_days * 86400 if body.expires_in_days else None,
        models=tuple(body.models) if body.models else None, limits=limits,
    )
    await asyncio.to_thread(_service(request).audit, who, "key_create", body.tenant,
                            key_id=info.id, role=body.role)
    return {"key": key, **info.to_json()}


@router.get("/admin/keys")
async def list_keys(
    request: Request,
    tenant: str | None = Query(default=None, max_length=64),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    """Keys (never their secrets)."""
    keys = await asyncio.to_thread(_service(request).tenants.keys, tenant)
    return {"object": "list", "data": [k.to_json() for k in keys]}


@router.delete("/admin/keys/{key_id}")
async def revoke_key(
    key_id: str, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Revoke a key at once."""
    await asyncio.to_thread(_service(request).tenants.revoke, key_id)
    await asyncio.to_thread(_service(request).audit, who, "key_revoke", None, key_id=key_id)
    return {"id": key_id, "revoked": True}


# -- the ledger (admins: auditors' access) ----------------------------------------


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
    """Ledger records in order (content not included)."""
    ledger = _service(request).ledger
    rows = await asyncio.to_thread(ledger.records, tenant, after_seq=after_seq, limit=limit)
    return {"object": "list", "data": [_entry(e) for e in rows]}


@router.get("/admin/ledger/verify")
async def ledger_verify(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
    """Verify the whole chain now."""
    report = await asyncio.to_thread(_service(request).ledger.verify)
    return report.to_dict()


@router.get("/admin/ledger/{seq}/content")
async def ledger_content(
    seq: int, request: Request, who: Principal = Depends(admin)
) -> dict[str, Any]:
    """A record's decrypted content (needs the server's ledger key); null once erased."""
    if not 1 <= seq <= 2**62:  # outside the database's integers: no such record
        raise NotFound(f"No ledger record {seq}.", param="seq")
    content = await asyncio.to_thread(_service(request).ledger.read_content, seq)
    await asyncio.to_thread(_service(request).audit, who, "ledger_read_content", None, seq=seq)
    return {"seq": seq, "content": content}
