"""Deleting a tenant: retire its id, then delete everything it left, in every area.

``delete_tenant`` is what ``intramuros tenants delete`` and ``DELETE
/v1/admin/tenants/{name}`` run. The tenant's row and keys go first, in one
transaction, so nothing can act as it any more and its name is free; its id
goes to ``tenant_tombstones`` and is never given again. Then each area
deletes the data stored under that id: the core's request log, usage and
metering rows, each workload's own data (files, OCR jobs, KYC customers and
cases, ...) and the ledger's stored content (the ledger's records stay, with
a tombstone, so the chain still verifies). A purge cut short (a crash, a
database error) leaves the tombstone pending; the server's purge schedule
finishes it (:func:`finish_pending`).

Workloads declare their purge as ``"module:function"`` in
:data:`AREA_PURGES`; each function takes a :class:`PurgeContext` and the
tenant id and returns counts of what it deleted. Every purge is idempotent.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from intramuros.errors import IntramurosError
from intramuros.gate.tenants import Tenants, TenantTombstone
from intramuros.ledger import Ledger
from intramuros.meter.tables import usage_metering
from intramuros.settings import Settings
from intramuros.store.db import Database, request_log, usage

log = logging.getLogger(__name__)

# The workloads' tenant purges, imported when a tenant is deleted.
AREA_PURGES: tuple[str, ...] = (
    "intramuros.docai.retention:purge_tenant",
    "intramuros.kyc.store:purge_tenant",
)


@dataclass(frozen=True)
class PurgeContext:
    """What an area's purge may use: the settings, the database, the ledger, who asked."""

    settings: Settings
    db: Database
    ledger: Ledger
    actor: str


AreaPurge = Callable[[PurgeContext, str], dict[str, int]]


def _area_purges() -> list[AreaPurge]:
    found: list[AreaPurge] = []
    for spec in AREA_PURGES:
        module, _, name = spec.partition(":")
        found.append(getattr(importlib.import_module(module), name))
    return found


Deleted = tuple[TenantTombstone, dict[str, int]]


def delete_tenant(ctx: PurgeContext, tenants: Tenants, name: str) -> Deleted:
    """Delete the tenant called ``name`` and all its data; ``(tombstone, counts)``."""
    tomb = tenants.delete(name, actor=ctx.actor)
    record = {"action": "tenant_delete", "actor": ctx.actor, "name": name}
    ctx.ledger.append("admin", tenant=tomb.id, key_id=None, subject=None, data=record)
    return tomb, purge_tenant(ctx, tenants, tomb)


def purge_tenant(ctx: PurgeContext, tenants: Tenants, tomb: TenantTombstone) -> dict[str, int]:
    """Delete every area's data of the deleted tenant ``tomb``; counts by kind."""
    counts = _core_rows(ctx.db, tomb.id)
    for purge in _area_purges():
        counts.update(purge(ctx, tomb.id))
    # Stored content last: the areas' purges above append (content-less) records.
    counts["ledger_content"] = ctx.ledger.shred_tenant(tomb.id, actor=ctx.actor)
    tenants.mark_purged(tomb.id, counts)
    ctx.ledger.append("admin", tenant=tomb.id, key_id=None, subject=None,
                      data={"action": "tenant_purged", "actor": ctx.actor, "name": tomb.name,
                            "deleted": counts})  # fmt: skip
    return counts


def finish_pending(ctx: PurgeContext, tenants: Tenants) -> dict[str, dict[str, int]]:
    """Finish the purges of deleted tenants that were cut short; counts by tenant id."""
    done: dict[str, dict[str, int]] = {}
    for tomb in tenants.tombstones(pending_only=True):
        try:
            done[tomb.id] = purge_tenant(ctx, tenants, tomb)
        except IntramurosError as exc:
            log.error("could not purge deleted tenant %s: %s", tomb.id, exc.message)
    return done


def _core_rows(db: Database, tenant_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with db.begin() as conn:
        for kind, table in (("requests", request_log), ("usage_days", usage),
                            ("metering_days", usage_metering)):  # fmt: skip
            counts[kind] = conn.execute(
                sa.delete(table).where(table.c.tenant == tenant_id)).rowcount
    return counts
