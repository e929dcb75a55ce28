"""Which tenant a caller may read or manage, by name, with one answer for "no".

A tenant the caller may not see answers exactly like a tenant that does not
exist (404 ``No tenant '...'``), so that names cannot be probed. Operators see
and manage every tenant; admins their own; users read their own.
"""

from __future__ import annotations

from intramuros.errors import NotFound
from intramuros.gate.tenants import Principal, Tenants


def _own(who: Principal, name: str) -> bool:
    return name in (who.tenant_name, who.tenant)


def readable(tenants: Tenants, who: Principal, name: str | None) -> str | None:
    """The tenant id a read may cover (``None``: every tenant, for operators only)."""
    if who.is_operator:
        return None if name is None else tenants.resolve(name)
    if name is not None and not _own(who, name):
        raise NotFound(f"No tenant '{name}'.", param="tenant")
    return who.tenant


def managed(tenants: Tenants, who: Principal, name: str | None) -> str:
    """The id of the tenant ``name`` (default: the caller's own) that ``who`` may manage."""
    if name is None or (not who.is_operator and _own(who, name)):
        if not who.is_admin:
            raise NotFound(f"No tenant '{name or who.tenant_name}'.", param="tenant")
        return who.tenant
    if not who.is_operator:
        raise NotFound(f"No tenant '{name}'.", param="tenant")
    return tenants.resolve(name)
