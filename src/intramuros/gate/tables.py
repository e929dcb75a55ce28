"""The gate's tables and schema steps: tenants, API keys, usage, and deleted tenants.

A tenant has a name (what people type) and an id (what every row of every area
stores in its ``tenant`` column). The first tenant ever called ``acme`` gets
the id ``acme``; once it is deleted, the id is never given again: a new
``acme`` gets ``acme.<8 hex>``. ``tenant_tombstones`` keeps the ids of deleted
tenants (so they are never reused) and whether their data has been purged
(a purge interrupted by a crash is finished by the server's purge schedule).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.store.db import Migration, area_steps, metadata

# The longest id: a name cut to 48 characters, a dot and 8 hex digits, so that it
# fits every area's 64-character tenant column.
ID_NAME_PART = 48

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("policy", sa.Text, nullable=False),
    # Added by the gate's step 2: what other tables store as the tenant.
    sa.Column("id", sa.String(64), nullable=True, unique=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("models", sa.Text, nullable=True),
    sa.Column("limits", sa.Text, nullable=True),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
)

tenant_tombstones = sa.Table(
    "tenant_tombstones",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=True),
    sa.Column("deleted_at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    # Null until every area has deleted the tenant's data.
    sa.Column("purged_at", sa.Float, nullable=True),
    # What the purge deleted, as JSON counts per kind of data.
    sa.Column("purged", sa.Text, nullable=True),
)

# Per-minute quotas shared by the replicas of one database (setting quota_store): each
# admitted request and each charge of tokens is an event; a scope's row is locked while
# a replica checks and counts it, so two replicas cannot both admit the last request.
quota_scopes = sa.Table(
    "quota_scopes",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("ident", sa.String(64), primary_key=True),
)
quota_events = sa.Table(
    "quota_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("ident", sa.String(64), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Index("ix_quota_events_scope", "kind", "ident", "ts"),
)

# Tenant values that are not tenants of the table: the tenant of --no-auth mode.
IMPLICIT_TENANTS = frozenset({"default"})


def _tenant_ids(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE tenants ADD COLUMN id VARCHAR(64)"))
    conn.execute(sa.text("UPDATE tenants SET id = name"))
    conn.execute(sa.text("CREATE UNIQUE INDEX ux_tenants_id ON tenants (id)"))


def _tombstones(conn: Connection) -> None:
    # A private copy, as the other areas do: later steps must not change this one.
    tenant_tombstones.to_metadata(sa.MetaData()).create(conn)


def _orphans(conn: Connection) -> None:
    """Tenants deleted before ids existed left rows behind: register them as deleted.

    Their ids are then never reused (a new tenant of the same name gets a new
    id), and the purge schedule deletes what they left.
    """
    found: set[str] = set()
    for table in ("api_keys", "request_log", "usage", "ledger_records"):
        rows = conn.execute(sa.text(
            f"SELECT DISTINCT tenant FROM {table} WHERE tenant IS NOT NULL"))
        found.update(str(r[0]) for r in rows)
    live = {str(r[0]) for r in conn.execute(sa.text("SELECT id FROM tenants"))}
    for tenant_id in sorted(found - live - IMPLICIT_TENANTS):
        conn.execute(sa.text(
            "INSERT INTO tenant_tombstones (id, name, created_at, deleted_at, actor) "
            "VALUES (:id, :name, NULL, :now, 'migration')"
        ), {"id": tenant_id, "name": tenant_id[:64], "now": time.time()})  # fmt: skip


def _shared_quotas(conn: Connection) -> None:
    private = sa.MetaData()
    for table in (quota_scopes, quota_events):
        table.to_metadata(private).create(conn)


def _create_v1(conn: Connection) -> None:
    """``tenants`` as the first step created it (step 2 adds ``id``), keys and usage."""
    v1 = sa.MetaData()
    sa.Table(
        "tenants", v1,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
    ).create(conn)  # fmt: skip
    for table in (api_keys, usage):
        table.to_metadata(v1).create(conn)


def migrations() -> list[Migration]:
    """The gate's steps (after the store's and the ledger's: step 2 reads their tables)."""
    return area_steps("gate", 20, [
        ("tenants, api keys, usage", [_create_v1]),
        ("tenants are identities", [_tenant_ids, _tombstones, _orphans]),
        ("per-minute quotas shared by replicas", [_shared_quotas]),
    ])  # fmt: skip
