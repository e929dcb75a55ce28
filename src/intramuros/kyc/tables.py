"""The KYC tables (migration 8): list versions and entities, thresholds, customers, hits, cases.

Lists are global (the operator imports them); thresholds, customers, hits and
cases belong to a tenant. A list import writes a new *version* (its entities
under the version id) and only then, in one short transaction, points
``kyc_lists.active_version`` at it: readers see the old list or the new one,
never half of either.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.store.db import Migration, area_steps, metadata

kyc_lists = sa.Table(
    "kyc_lists", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("active_version", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)  # fmt: skip

kyc_list_versions = sa.Table(
    "kyc_list_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("list_name", sa.String(100), nullable=False, index=True),
    sa.Column("format", sa.String(40), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("list_date", sa.String(10), nullable=True),
    sa.Column("imported_at", sa.Float, nullable=False),
    sa.Column("entity_count", sa.Integer, nullable=False),
    sa.Column("error_count", sa.Integer, nullable=False),
    sa.Column("errors", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
)  # fmt: skip

kyc_entities = sa.Table(
    "kyc_entities", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.Integer, nullable=False, index=True),
    sa.Column("source_id", sa.String(200), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)  # fmt: skip

kyc_thresholds = sa.Table(
    "kyc_thresholds", metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("threshold", sa.Float, nullable=False),
)  # fmt: skip

kyc_customers = sa.Table(
    "kyc_customers", metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(200), primary_key=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)  # fmt: skip

kyc_hits = sa.Table(
    "kyc_hits", metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(200), primary_key=True),
    sa.Column("list_name", sa.String(100), primary_key=True),
    sa.Column("source_id", sa.String(200), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("case_id", sa.String(40), nullable=True),
    sa.Column("seen_at", sa.Float, nullable=False),
)  # fmt: skip

kyc_cases = sa.Table(
    "kyc_cases", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("top_score", sa.Float, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("history", sa.Text, nullable=False),
    sa.Index("ix_kyc_cases_tenant_created", "tenant", "created_at"),
)  # fmt: skip

_TABLES = (kyc_lists, kyc_list_versions, kyc_entities, kyc_thresholds, kyc_customers,
           kyc_hits, kyc_cases)  # fmt: skip


def _create(conn: Connection) -> None:
    # A private copy, as the other areas do: later steps must not change this one.
    frozen = sa.MetaData()
    for table in _TABLES:
        table.to_metadata(frozen).create(conn)


def migration_steps() -> list[tuple[str, Callable[[Connection], None]]]:
    """(name, apply) pairs run in order by the database's migration for this area."""
    return [("kyc lists, customers, cases", _create)]


def migrations() -> list[Migration]:
    """The KYC workload's steps."""
    return area_steps("kyc", 100, [
        ("kyc lists, customers, cases", [a for _n, a in migration_steps()]),
    ])  # fmt: skip
