"""Wire types of the administration API: tenants, keys, policies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from intramuros.protocol.base import Request


class TenantCreateRequest(Request):
    """``POST /v1/admin/tenants``."""

    name: str = Field(max_length=64)
    policy: dict[str, Any] | None = None


class PolicyUpdateRequest(Request):
    """``PATCH /v1/admin/tenants/{name}/policy``: the fields to change, others kept."""

    pii_default: str | None = None
    pii: dict[str, str] | None = None
    store_content: bool | None = None
    retention_days: int | None = None
    limits: dict[str, int | None] | None = None


class KeyCreateRequest(Request):
    """``POST /v1/admin/keys`` (operator keys are made on the machine, with the CLI)."""

    tenant: str | None = Field(default=None, max_length=64)
    role: Literal["user", "admin"] = "user"
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    models: list[str] | None = None
    limits: dict[str, int | None] | None = None
