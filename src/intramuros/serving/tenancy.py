"""Deleting a tenant: retire its id, then delete everything it left, in every area.

``delete_tenant`` is what ``intramuros tenants delete`` and ``DELETE
/v1/admin/tenants/{name}`` run. The tenant's row and keys go first, in one
transaction, so nothing can act as it any more and its name is free; its id
goes to ``tenant_tombstones`` and is never given again. Then each area
deletes the data stored under that id: the core's request log, usage and
metering rows, each installed workload's own data (its plug-in's
``purge_tenant``: files, OCR jobs, KYC customers and cases, ...) and the
ledger's stored content (the ledger's records stay, with a tombstone, so the
chain still verifies). A purge cut short (a crash, a database error) leaves
the tombstone pending; the server's purge schedule finishes it
(:func:`finish_pending`). Every purge is idempotent.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from intramuros.catalog.catalog import Catalog
from intramuros.errors import IntramurosError
from intramuros.gate.tables import usage
from intramuros.gate.tenants import Tenants, TenantTombstone
from intramuros.ledger import Ledger
from intramuros.meter.tables import usage_metering
from intramuros.platform.plugin import TenantPurge, installed_workloads
from intramuros.settings import Settings
from intramuros.store.db import Database, request_log

log = logging.getLogger(__name__)

Deleted = tuple[TenantTombstone, dict[str, int]]


def purge_context(settings: Settings, db: Database, ledger: Ledger, actor: str) -> TenantPurge:
    """What a workload's purge of a deleted tenant is given, acting as ``actor``."""
    return TenantPurge(settings=settings, tables=db, auditor=ledger, actor=actor)


def delete_tenant(ctx: TenantPurge, tenants: Tenants, name: str) -> Deleted:
    """Delete the tenant called ``name`` and all its data; ``(tombstone, counts)``."""
    tomb = tenants.delete(name, actor=ctx.actor)
    record = {"action": "tenant_delete", "actor": ctx.actor, "name": name}
    ctx.auditor.append("admin", tenant=tomb.id, key_id=None, subject=None, data=record)
    return tomb, purge_tenant(ctx, tenants, tomb)


def purge_tenant(ctx: TenantPurge, tenants: Tenants, tomb: TenantTombstone) -> dict[str, int]:
    """Delete every area's data of the deleted tenant ``tomb``; counts by kind."""
    db, ledger = tenants.db, _ledger_of(ctx)
    counts = _core_rows(db, tomb.id)
    # Models made from the tenant's data (fine-tuned) are its data too.
    counts["models"] = Catalog(db, ctx.settings).remove_owned(tomb.id)
    for workload in installed_workloads():
        if workload.purge_tenant is not None:
            counts.update(workload.purge_tenant(ctx, tomb.id))
    # Stored content last: the areas' purges above append (content-less) records.
    counts["ledger_content"] = ledger.shred_tenant(tomb.id, actor=ctx.actor)
    tenants.mark_purged(tomb.id, counts)
    ctx.auditor.append("admin", tenant=tomb.id, key_id=None, subject=None,
                       data={"action": "tenant_purged", "actor": ctx.actor, "name": tomb.name,
                             "deleted": counts})  # fmt: skip
    return counts


def finish_pending(ctx: TenantPurge, tenants: Tenants) -> dict[str, dict[str, int]]:
    """Finish the purges of deleted tenants that were cut short; counts by tenant id."""
    done: dict[str, dict[str, int]] = {}
    for tomb in tenants.tombstones(pending_only=True):
        try:
            done[tomb.id] = purge_tenant(ctx, tenants, tomb)
        except IntramurosError as exc:
            log.error("could not purge deleted tenant %s: %s", tomb.id, exc.message)
    return done


def _ledger_of(ctx: TenantPurge) -> Ledger:
    # The core builds the context with its ledger; shredding content is the ledger's own act.
    if not isinstance(ctx.auditor, Ledger):
        raise TypeError("a tenant purge needs the ledger as its auditor")
    return ctx.auditor


def _core_rows(db: Database, tenant_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with db.begin() as conn:
        for kind, table in (("requests", request_log), ("usage_days", usage),
                            ("metering_days", usage_metering)):  # fmt: skip
            counts[kind] = conn.execute(
                sa.delete(table).where(table.c.tenant == tenant_id)).rowcount
    return counts
