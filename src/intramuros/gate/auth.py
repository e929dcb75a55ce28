"""The HTTP side of the gate: who is calling, and may they."""

from __future__ import annotations

import asyncio

from fastapi import Request

from intramuros.errors import PermissionDenied
from intramuros.gate.tenants import Principal

# With --no-auth (loopback only) every caller is this operator of tenant "default".
ANONYMOUS = Principal(tenant="default", key_id=None, role="operator", tenant_name="default")


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def principal(request: Request) -> Principal:
    """FastAPI dependency: authenticate the request's API key (401 if it fails)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    service = request.app.state.service
    if not service.settings.auth:
        who = ANONYMOUS
    else:
        token = bearer_token(request)
        # A key checked a moment ago is remembered (no I/O); otherwise scrypt (first use
        # of a key) and a database read, off the event loop.
        who = service.tenants.cached_principal(token) or await asyncio.to_thread(
            service.tenants.authenticate, token)
    request.state.principal = who
    return who


async def admin(request: Request) -> Principal:
    """FastAPI dependency: an admin key of its tenant, or an operator key (403 for a user key)."""
    who = await principal(request)
    if not who.is_admin:
        raise PermissionDenied("This route needs an admin key.")
    return who


async def operator(request: Request) -> Principal:
    """FastAPI dependency: an operator key (403 for user and tenant-admin keys)."""
    who = await principal(request)
    if not who.is_operator:
        raise PermissionDenied("This route needs an operator key (`intramuros keys create "
                               "--role operator` on the server).")
    return who
