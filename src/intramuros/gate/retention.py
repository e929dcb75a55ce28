"""Retention: erase stored text older than each tenant's retention period."""

from __future__ import annotations

import time

from intramuros.gate.tenants import Tenants
from intramuros.ledger import Ledger


def run_retention(
    tenants: Tenants, ledger: Ledger, *, actor: str, tenant: str | None = None
) -> dict[str, int]:
    """Purge every tenant with a retention period (or just ``tenant``, an id); counts by id.

    The ledger's records stay (their hashes cover only a digest of the text);
    each purge appends a tombstone saying when, by whom and how much.
    """
    done: dict[str, int] = {}
    now = time.time()
    for tenant_id in [tenant] if tenant else tenants.ids():
        days = tenants.policy(tenant_id).retention_days
        if days is not None:
            done[tenant_id] = ledger.purge(tenant_id, now - days * 86400, actor=actor)
    return done
