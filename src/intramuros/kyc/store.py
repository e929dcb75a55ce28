"""KYC state in the database: list versions (atomic switch), thresholds, customers, hits.

Cases live in :mod:`intramuros.kyc.cases`. Everything goes through
the unit of work the platform gives (SQLite or PostgreSQL alike).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.kyc.importers import ImportResult
from intramuros.kyc.model import Entity
from intramuros.kyc.tables import (
    kyc_cases,
    kyc_customers,
    kyc_entities,
    kyc_hits,
    kyc_list_versions,
    kyc_lists,
    kyc_thresholds,
)
from intramuros.platform.interface import UnitOfWork
from intramuros.platform.plugin import TenantPurge

_CHUNK = 1000


@dataclass(frozen=True)
class ListStatus:
    """The active version of one list."""

    name: str
    version: int
    format: str
    source: str
    sha256: str
    list_date: str | None
    imported_at: float
    entities: int
    errors: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


class KycStore:
    """Database access of the KYC workload."""

    def __init__(self, db: UnitOfWork) -> None:
        self.db = db

    # -- lists ---------------------------------------------------------------

    def import_list(self, result: ImportResult, list_name: str, fmt: str, source: str) -> int:
        """Write a new version of ``list_name`` and make it active; return its id.

        The entities are written first under a version nobody reads; the switch
        of the active pointer is one small transaction at the end. If anything
        fails before, the previous version stays active.
        """
        errors = [str(e) for e in result.errors[:200]]
        with self.db.begin() as conn:
            inserted = conn.execute(kyc_list_versions.insert().values(
                list_name=list_name, format=fmt, source=source, sha256=result.sha256,
                list_date=result.list_date, imported_at=time.time(),
                entity_count=len(result.entities), error_count=len(result.errors),
                errors=json.dumps(errors, ensure_ascii=False), status="loading",
            ))  # fmt: skip
            key = inserted.inserted_primary_key
            assert key is not None
            version = int(key[0])
        rows = [{"version_id": version, "source_id": e.source_id,
                 "data": json.dumps(e.to_dict(), ensure_ascii=False)} for e in result.entities]
        for start in range(0, len(rows), _CHUNK):
            with self.db.begin() as conn:
                conn.execute(kyc_entities.insert(), rows[start:start + _CHUNK])
        with self.db.begin() as conn:
            conn.execute(kyc_list_versions.update().where(kyc_list_versions.c.id == version)
                         .values(status="ready"))  # fmt: skip
            updated = conn.execute(kyc_lists.update().where(kyc_lists.c.name == list_name)
                                   .values(active_version=version, updated_at=time.time()))
            if not updated.rowcount:
                conn.execute(kyc_lists.insert().values(name=list_name, active_version=version,
                                                       updated_at=time.time()))  # fmt: skip
        self._prune(list_name, keep=2)
        return int(version)

    def _prune(self, list_name: str, keep: int) -> None:
        """Delete all but the newest ``keep`` ready versions (a reader may still load the
        previous one it saw just before the switch)."""
        with self.db.begin() as conn:
            ids = [r[0] for r in conn.execute(
                sa.select(kyc_list_versions.c.id).where(kyc_list_versions.c.list_name == list_name)
                .order_by(kyc_list_versions.c.id.desc()))]  # fmt: skip
            old = ids[keep:]
            if old:
                conn.execute(kyc_entities.delete().where(kyc_entities.c.version_id.in_(old)))
                conn.execute(kyc_list_versions.delete().where(kyc_list_versions.c.id.in_(old)))

    def delete_list(self, list_name: str) -> bool:
        """Stop screening against a list (its versions are deleted)."""
        with self.db.begin() as conn:
            gone = conn.execute(kyc_lists.delete().where(kyc_lists.c.name == list_name)).rowcount
        if gone:
            self._prune(list_name, keep=0)
        return bool(gone)

    def active_versions(self) -> dict[str, tuple[int, int]]:
        """{list name: (active version id, entity count)}."""
        with self.db.begin() as conn:
            v = kyc_list_versions
            rows = conn.execute(
                sa.select(kyc_lists.c.name, v.c.id, v.c.entity_count)
                .join(v, v.c.id == kyc_lists.c.active_version)
            ).all()  # fmt: skip
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def load_version(self, version: int) -> list[Entity]:
        """Every entity of one list version."""
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(kyc_entities.c.data)
                                .where(kyc_entities.c.version_id == version)
                                .order_by(kyc_entities.c.id)).all()  # fmt: skip
        return [Entity.from_dict(json.loads(r[0])) for r in rows]

    def status(self) -> list[ListStatus]:
        """The active version of every list."""
        v = kyc_list_versions
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(kyc_lists.c.name, v.c.id, v.c.format, v.c.source, v.c.sha256,
                          v.c.list_date, v.c.imported_at, v.c.entity_count, v.c.error_count)
                .join(v, v.c.id == kyc_lists.c.active_version).order_by(kyc_lists.c.name)
            ).all()  # fmt: skip
        return [ListStatus(*r) for r in rows]

    # -- thresholds ------------------------------------------------------------

    def threshold(self, tenant: str) -> float | None:
        """The tenant's own alert threshold, if set."""
        with self.db.begin() as conn:
            value = conn.execute(sa.select(kyc_thresholds.c.threshold)
                                 .where(kyc_thresholds.c.tenant == tenant)).scalar()  # fmt: skip
        return None if value is None else float(value)

    def set_threshold(self, tenant: str, value: float) -> None:
        """Set (replace) the tenant's alert threshold."""
        with self.db.begin() as conn:
            conn.execute(kyc_thresholds.delete().where(kyc_thresholds.c.tenant == tenant))
            conn.execute(kyc_thresholds.insert().values(tenant=tenant, threshold=value))

    # -- customers and their hits ----------------------------------------------

    def save_customers(self, tenant: str, customers: dict[str, dict[str, Any]]) -> None:
        """Keep screened customers (by id) for re-screening after list updates."""
        with self.db.begin() as conn:
            write_customers(conn, tenant, customers)

    def customers(self, tenant: str) -> list[tuple[str, dict[str, Any]]]:
        """(customer id, subject) of every stored customer of a tenant."""
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(kyc_customers.c.customer_id, kyc_customers.c.subject)
                                .where(kyc_customers.c.tenant == tenant)
                                .order_by(kyc_customers.c.customer_id)).all()  # fmt: skip
        return [(r[0], json.loads(r[1])) for r in rows]

    def known_hits(self, tenant: str) -> dict[tuple[str, str, str], str]:
        """{(customer id, list, source id): content digest} of the hits seen for a tenant."""
        h = kyc_hits.c
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(h.customer_id, h.list_name, h.source_id, h.digest)
                                .where(h.tenant == tenant)).all()  # fmt: skip
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    def record_hits(self, tenant: str,
                    hits: list[tuple[str, str, str, str, str | None]]) -> None:  # fmt: skip
        """Remember (customer, list, source id, digest, case id) hits, replacing older digests."""
        with self.db.begin() as conn:
            write_hits(conn, tenant, hits)


def write_customers(conn: Connection, tenant: str, customers: dict[str, dict[str, Any]]) -> None:
    """:meth:`KycStore.save_customers` on the caller's transaction."""
    c = kyc_customers.c
    now = time.time()
    items = list(customers.items())
    for start in range(0, len(items), _CHUNK):
        chunk = items[start:start + _CHUNK]
        conn.execute(kyc_customers.delete().where(
            (c.tenant == tenant) & c.customer_id.in_([cid for cid, _d in chunk])))
        conn.execute(kyc_customers.insert(), [
            {"tenant": tenant, "customer_id": cid, "updated_at": now,
             "subject": json.dumps(data, ensure_ascii=False)} for cid, data in chunk])


def write_hits(conn: Connection, tenant: str,
               hits: list[tuple[str, str, str, str, str | None]]) -> None:  # fmt: skip
    """:meth:`KycStore.record_hits` on the caller's transaction."""
    h = kyc_hits.c
    now = time.time()
    for customer, list_name, source_id, digest, case_id in hits:
        conn.execute(kyc_hits.delete().where(
            (h.tenant == tenant) & (h.customer_id == customer)
            & (h.list_name == list_name) & (h.source_id == source_id)))
        conn.execute(kyc_hits.insert().values(
            tenant=tenant, customer_id=customer, list_name=list_name,
            source_id=source_id, digest=digest, case_id=case_id, seen_at=now))


def purge_tenant(ctx: TenantPurge, tenant: str) -> dict[str, int]:
    """Delete a deleted tenant's customers, hits, cases and threshold (lists are shared)."""
    counts: dict[str, int] = {}
    with ctx.tables.begin() as conn:
        for kind, table in (("kyc_cases", kyc_cases), ("kyc_customers", kyc_customers),
                            ("kyc_hits", kyc_hits), ("kyc_thresholds", kyc_thresholds)):
            counts[kind] = conn.execute(
                sa.delete(table).where(table.c.tenant == tenant)).rowcount
    return counts
